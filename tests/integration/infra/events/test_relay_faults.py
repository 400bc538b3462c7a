"""The relay under faults, against real PostgreSQL and Redis: outages never abandon an event, order per
aggregate holds, and the Stream gets one entry per event id however often an event is sent."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.service import RPCError, RPCStatusCode

from infra.cache.keys import events_channel, events_stream, published_marker_key
from infra.db.pools import PoolManager
from infra.events.dead_letters import list_dead_letters, replay_dead_letter
from infra.events.outbox import EventEnvelope
from infra.events.publish import StreamPublisher
from infra.events.relay import OutboxRelay
from infra.stack.embedded import free_port
from tests.integration.infra.events.outbox_support import (
    RedisServer,
    dlq_rows,
    drain,
    emit,
    outbox,
    sequences,
    stream,
    until,
)

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}
"""Backoff of these tests: an outage of a second is worth dozens of attempts."""


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def _rows(pools: PoolManager, tenants: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tenant in tenants:
        out.update(await outbox(pools, tenant))
    return out


async def test_a_redis_outage_longer_than_the_attempt_budget_abandons_nothing(services, tmp_path: Path) -> None:
    server = RedisServer(tmp_path, free_port())
    await server.start()
    pools = PoolManager(services.app_url, server.url, min_size=1, max_size=4, acquire_timeout=5)
    await pools.open()
    tenants = [_tenant(), _tenant()]
    aggregates = {t: [str(uuid.uuid4()) for _ in range(3)] for t in tenants}
    max_attempts = 2
    relay = OutboxRelay(pools, batch_size=5, poll_interval=0.1, max_attempts=max_attempts, name="outage", **FAST)
    stop = asyncio.Event()
    runner = asyncio.create_task(relay.run(stop))

    async def wave(first: int, count: int) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {t: [] for t in tenants}
        for seq in range(first, first + count):
            for tenant in tenants:
                for agg in aggregates[tenant]:
                    ids[tenant].append((await emit(pools, tenant, agg, seq)).event_id)
        return ids

    async def published(ids: dict[str, list[str]]) -> bool:
        rows = await _rows(pools, tenants)
        return all(rows[e]["status"] == "published" for events in ids.values() for e in events)

    try:
        before = await wave(0, 2)
        await until(lambda: published(before), what="the events before the outage")
        await server.stop()
        during = await wave(2, 3)
        during_ids = [e for events in during.values() for e in events]

        async def outlasted_budget() -> bool:  # measured in attempts, not seconds
            rows = await _rows(pools, tenants)
            return sum(rows[e]["transient_failures"] for e in during_ids) > 4 * max_attempts

        await until(outlasted_budget, what="retries through the outage")
        rows = await _rows(pools, tenants)
        assert {rows[e]["status"] for e in during_ids} == {"pending"}
        assert all(rows[e]["attempts"] == 0 for e in during_ids)  # the logical budget is untouched
        assert max(rows[e]["transient_failures"] for e in during_ids) >= max_attempts  # old relay: failed
        assert any("ConnectionError" in (rows[e]["last_error"] or "") for e in during_ids)
        for tenant in tenants:
            assert await dlq_rows(pools, tenant) == []

        await server.start()  # the same port, empty (no persistence): the relay's client reconnects
        await until(lambda: published(during), what="the events after the outage")

        rows = await _rows(pools, tenants)
        for tenant in tenants:
            entries = await stream(pools.redis, tenant)
            assert sorted(env.event_id for _, env in entries) == sorted(during[tenant])  # each once
            assert sequences(entries) == {agg: [2, 3, 4] for agg in aggregates[tenant]}  # in order, no gap
            assert {env.event_id: sid for sid, env in entries} == {e: rows[e]["stream_id"] for e in during[tenant]}
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)
        await pools.close()
        await server.stop()


async def test_a_handler_that_cannot_reach_temporal_never_spends_the_budget(pools: PoolManager,
                                                                            tenant_id: str) -> None:
    temporal_down = True
    calls: Counter[str] = Counter()

    async def start_grading(env: EventEnvelope) -> None:
        calls[env.event_id] += 1
        if temporal_down:
            raise RPCError("Server connection error: connection refused", RPCStatusCode.UNAVAILABLE, b"")

    max_attempts = 2
    relay = OutboxRelay(pools, batch_size=50, max_attempts=max_attempts, name="temporal-down",
                        handlers={"test.received": start_grading}, **FAST)
    submissions = [str(uuid.uuid4()) for _ in range(4)]
    others = [str(uuid.uuid4()) for _ in range(2)]
    received = [await emit(pools, tenant_id, s, 0, event_type="test.received") for s in submissions]
    behind = [await emit(pools, tenant_id, s, 1) for s in submissions]  # no handler, but after a received
    free = [await emit(pools, tenant_id, o, 0) for o in others]

    await relay.run_once()
    rows = await outbox(pools, tenant_id)
    assert sum(calls.values()) == 1  # one failed start holds back the other starts of this batch
    assert all(rows[e.event_id]["status"] == "published" for e in free)  # other types go on
    assert all(rows[e.event_id]["status"] == "pending" for e in received + behind)

    async def outlasted_budget() -> bool:  # measured in attempts, not seconds
        before = sum(calls.values())
        await relay.run_once()
        assert sum(calls.values()) - before <= 1  # each batch tries one start while Temporal is down
        rows = await outbox(pools, tenant_id)
        return sum(rows[e.event_id]["transient_failures"] for e in received) > 4 * max_attempts

    await until(outlasted_budget, what="retries of the starts through the outage")
    rows = await outbox(pools, tenant_id)
    assert all(rows[e.event_id]["status"] == "pending" and rows[e.event_id]["attempts"] == 0 for e in received)
    assert max(rows[e.event_id]["transient_failures"] for e in received) > max_attempts  # old relay: failed
    assert all(rows[e.event_id]["status"] == "pending" for e in behind)  # still behind their received
    assert "RPCError" in rows[received[0].event_id]["last_error"]

    temporal_down = False
    await drain(relay, pools, [tenant_id])
    entries = await stream(pools.redis, tenant_id)
    assert Counter(env.event_id for _, env in entries) == Counter(
        e.event_id for e in received + behind + free)  # sent on every attempt, on the Stream once
    assert sequences(entries) == {**{s: [0, 1] for s in submissions}, **{o: [0] for o in others}}
    assert all(calls[e.event_id] >= 1 for e in received)


async def test_a_handler_failing_after_the_append_leaves_one_stream_entry(pools: PoolManager, tenant_id: str) -> None:
    failures = [RuntimeError("reconciler bug"), ConnectionError("temporal unreachable")]

    async def flaky(env: EventEnvelope) -> None:
        if failures:
            raise failures.pop(0)

    pubsub = pools.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(events_channel(tenant_id))
    try:
        relay = OutboxRelay(pools, max_attempts=3, name="after-append", handlers={"test.received": flaky}, **FAST)
        env = await emit(pools, tenant_id, str(uuid.uuid4()), 0, event_type="test.received")
        rows = await drain(relay, pools, [tenant_id])
        assert not failures  # both failures happened after the append
        assert rows[env.event_id]["status"] == "published"
        entries = await pools.redis.xrange(events_stream(tenant_id))
        assert [(sid, fields["event_id"]) for sid, fields in entries] == [(rows[env.event_id]["stream_id"],
                                                                           env.event_id)]
        messages = []
        async with asyncio.timeout(5):
            while not messages:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message:
                    messages.append(message["data"])
        await asyncio.sleep(0.2)
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)) is not None:
            messages.append(message["data"])
    finally:
        await pubsub.aclose()
    # One message, in the format the WebSocket feed reads: the envelope with the stream id added last.
    assert len(messages) == 1
    stored = EventEnvelope.from_json(entries[0][1]["event"])
    assert json.loads(messages[0]) == {**stored.to_dict(), "stream_id": entries[0][0]}
    assert list(json.loads(messages[0]))[-1] == "stream_id"
    assert entries[0][1]["event"] == stored.to_json()


async def test_publishing_an_event_again_returns_its_first_entry(pools: PoolManager, tenant_id: str) -> None:
    publisher = StreamPublisher(pools.redis, marker_ttl=120)
    env = await emit(pools, tenant_id, str(uuid.uuid4()), 0)
    first = await publisher.publish(env)
    again = await publisher.publish(env)
    assert first.fresh and not again.fresh
    assert again.stream_id == first.stream_id
    assert await pools.redis.xlen(events_stream(tenant_id)) == 1
    marker = published_marker_key(tenant_id, env.event_id)
    assert f"{{{tenant_id}}}" in marker  # the stream's hash tag: one slot for the script
    assert await pools.redis.get(marker) == first.stream_id
    assert 0 < await pools.redis.ttl(marker) <= 120


async def test_many_tenants_and_aggregates_in_flight_with_failures(pools: PoolManager) -> None:
    tenants = [_tenant() for _ in range(3)]
    aggregates = {t: [str(uuid.uuid4()) for _ in range(4)] for t in tenants}
    per_aggregate = 6
    poison = {(t, aggregates[t][0], 2) for t in tenants}  # fails until healed: dead-lettered
    healed = False
    rng = random.Random(7)
    flaky: dict[tuple[str, str, int], Exception] = {}
    for t in tenants:
        for agg in aggregates[t]:
            for seq in range(per_aggregate):
                roll = rng.random()
                if roll < 0.15:
                    flaky[(t, agg, seq)] = ConnectionError("briefly unreachable")
                elif roll < 0.3:
                    flaky[(t, agg, seq)] = RuntimeError("failed once")
    calls: Counter[str] = Counter()

    async def handler(env: EventEnvelope) -> None:
        key = (env.tenant_id, env.target_id, env.payload["seq"])
        calls[env.event_id] += 1
        await asyncio.sleep(rng.uniform(0, 0.002))
        if key in poison and not healed:
            raise ValueError(f"cannot handle {key[2]}")
        if key in flaky and calls[env.event_id] == 1:
            raise flaky[key]

    max_attempts = 3
    relays = [OutboxRelay(pools, batch_size=7, poll_interval=0.1, max_attempts=max_attempts, name=f"many-{i}",
                          handlers={"test.doc_changed": handler}, **FAST) for i in range(2)]
    stop = asyncio.Event()
    runners = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        async def writer(tenant: str, agg: str) -> None:
            for seq in range(per_aggregate):
                await emit(pools, tenant, agg, seq)
                await asyncio.sleep(rng.uniform(0, 0.004))

        await asyncio.gather(*(writer(t, a) for t in tenants for a in aggregates[t]))

        async def settled() -> bool:  # everything published but the poisoned events and those behind them
            rows = await _rows(pools, tenants)
            for row in rows.values():
                seq, agg = row["payload"]["seq"], row["target_id"]
                stuck = any(agg == p_agg and seq >= p_seq for _, p_agg, p_seq in poison)
                wanted = ("failed" if seq == 2 else "pending") if stuck else "published"
                if row["status"] != wanted:
                    return False
            return len(rows) == len(tenants) * 4 * per_aggregate

        await until(settled, what="all but the dead-lettered aggregates to be published")
        for tenant in tenants:
            entries = await stream(pools.redis, tenant)
            seqs = sequences(entries)
            assert seqs[aggregates[tenant][0]] == [0, 1, 2]  # the poisoned one was appended; nothing after it
            assert all(seqs[a] == list(range(per_aggregate)) for a in aggregates[tenant][1:])
            [item] = await list_dead_letters(pools, tenant_id=tenant)
            assert item.attempts == max_attempts and item.blocking == per_aggregate - 3
            assert item.last_error == "ValueError: cannot handle 2"

        healed = True
        for tenant in tenants:
            [item] = await list_dead_letters(pools, tenant_id=tenant)
            await replay_dead_letter(pools, item.id, actor="test", reason="redis back")
        await until(lambda: _all_published(pools, tenants), what="the replayed aggregates")
    finally:
        stop.set()
        await asyncio.gather(*runners)

    rows = await _rows(pools, tenants)
    for tenant in tenants:
        entries = await stream(pools.redis, tenant)
        ids = [env.event_id for _, env in entries]
        assert len(ids) == len(set(ids)) == 4 * per_aggregate  # every event once, whatever failed
        assert sequences(entries) == {a: list(range(per_aggregate)) for a in aggregates[tenant]}
        assert all(rows[env.event_id]["stream_id"] == sid for sid, env in entries)
        assert all(env.tenant_id == tenant for _, env in entries)
        assert await list_dead_letters(pools, tenant_id=tenant) == []  # replayed: no longer open


async def _all_published(pools: PoolManager, tenants: list[str]) -> bool:
    return all(r["status"] == "published" for r in (await _rows(pools, tenants)).values())
