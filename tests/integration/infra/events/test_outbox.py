"""Outbox and relay against real PostgreSQL and Redis (property 24 and delivery order)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import defaultdict
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.cache.keys import events_channel, events_stream
from infra.db.pools import PoolManager
from infra.events.outbox import EventEnvelope, add_event, mark_consumed
from infra.events.relay import OutboxRelay, backoff_delay, replay_failed

INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, %s)"
UPDATE_EXAM_SQL = "UPDATE exams SET title = %s WHERE id = %s"
STATUS_SQL = "SELECT event_id::text AS event_id, status, attempts, last_error FROM event_outbox ORDER BY id"


async def _stream(pools: PoolManager, tenant: str) -> list[tuple[str, dict[str, str]]]:
    return await pools.redis.xrange(events_stream(tenant))


async def _statuses(pools: PoolManager, tenant: str) -> dict[str, dict[str, Any]]:
    async with pools.transaction(tenant) as conn:
        return {r["event_id"]: r for r in await (await conn.execute(STATUS_SQL)).fetchall()}


async def _drain(relay: OutboxRelay, pools: PoolManager, tenant: str, until: str = "published",
                 timeout: float = 15) -> dict[str, dict[str, Any]]:
    """Run batches until every event of ``tenant`` has left ``pending``."""
    async with asyncio.timeout(timeout):
        while True:
            await relay.run_once()
            rows = await _statuses(pools, tenant)
            if all(r["status"] != "pending" for r in rows.values()):
                return rows
            await asyncio.sleep(0.02)


async def _wait_published(pools: PoolManager, tenant: str, event_ids: set[str], timeout: float) -> None:
    """Poll the outbox (another task or process publishes) until every event is published."""
    async with asyncio.timeout(timeout):
        while True:
            rows = await _statuses(pools, tenant)
            if all(rows.get(e, {}).get("status") == "published" for e in event_ids):
                return
            await asyncio.sleep(0.01)


async def _business_event(pools: PoolManager, tenant: str, exam_id: str, seq: int, *, create: bool = False,
                          event_type: str = "test.exam_changed") -> EventEnvelope:
    """One business transaction: write the exam row and its event together."""
    async with pools.transaction(tenant) as conn:
        if create:
            await conn.execute(INSERT_TENANT_SQL, (tenant,))
            await conn.execute(INSERT_EXAM_SQL, (exam_id, tenant, f"v{seq}"))
        else:
            await conn.execute(UPDATE_EXAM_SQL, (f"v{seq}", exam_id))
        return await add_event(conn, tenant_id=tenant, event_type=event_type, target_type="exam",
                               target_id=exam_id, payload={"seq": seq}, version=seq, actor_id="tester",
                               trace_id="trace-1", correlation_id="corr-1")


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10)


@given(payload=st.dictionaries(texts, st.integers(-2**53, 2**53) | texts | st.booleans() | st.none(), max_size=5),
       actor=st.none() | texts.filter(bool))
async def test_envelope_roundtrip_through_the_database(pools: PoolManager, tenant_id: str,
                                                       payload: dict[str, Any], actor: str | None) -> None:
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant_id,))
        env = await add_event(conn, tenant_id=tenant_id, event_type="test.roundtrip", target_type="thing",
                              target_id="t1", payload=payload, actor_id=actor, causation_id="cause")
        cur = await conn.execute("SELECT * FROM event_outbox WHERE event_id = %s", (env.event_id,))
        stored = EventEnvelope.from_row(await cur.fetchone())
        await conn.execute("DELETE FROM event_outbox WHERE event_id = %s", (env.event_id,))
    assert stored == env
    assert EventEnvelope.from_json(env.to_json()) == env


# One business transaction: (aggregate, events it writes, outcome). Rolled back by a Python error
# in the business code or by a real PostgreSQL error (NOT NULL violation) after the events.
transactions = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3),
                                  st.sampled_from(["commit", "commit", "raise", "db_error"])),
                        min_size=1, max_size=8)


@settings(max_examples=10)
@given(txns=transactions, flaky=st.sets(st.integers(0, 23), max_size=4), relays=st.integers(1, 2),
       batch_size=st.integers(1, 10))
async def test_property24_committed_changes_reach_consumers_at_least_once_and_apply_once(
        pools: PoolManager, txns: list[tuple[int, int, str]], flaky: set[int], relays: int, batch_size: int) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"  # each example on its own tenant, stream and outbox rows
    aggregates = [str(uuid.uuid4()) for _ in range(3)]
    titles: dict[str, str] = {}  # committed title per aggregate
    committed: list[EventEnvelope] = []
    rolled_back: list[EventEnvelope] = []
    for t, (agg, n_events, outcome) in enumerate(txns):
        exam_id, envs = aggregates[agg], []
        try:
            async with pools.transaction(tenant) as conn:
                if exam_id not in titles:
                    await conn.execute(INSERT_TENANT_SQL, (tenant,))
                    await conn.execute(INSERT_EXAM_SQL, (exam_id, tenant, f"v{t}"))
                else:
                    await conn.execute(UPDATE_EXAM_SQL, (f"v{t}", exam_id))
                for j in range(n_events):
                    envs.append(await add_event(conn, tenant_id=tenant, event_type="test.exam_changed",
                                                target_type="exam", target_id=exam_id,
                                                payload={"seq": t, "n": j}, version=t + 1))
                if outcome == "raise":
                    raise RuntimeError("business rule failed")
                if outcome == "db_error":
                    await conn.execute(UPDATE_EXAM_SQL, (None, exam_id))
        except (RuntimeError, psycopg.errors.NotNullViolation):
            rolled_back.extend(envs)
            continue
        committed.extend(envs)
        titles[exam_id] = f"v{t}"

    # Consumers' first delivery of some committed events fails: the relay delivers them again.
    flaky_ids = {committed[i].event_id for i in flaky if i < len(committed)}
    handled: dict[str, int] = defaultdict(int)

    async def handler(env: EventEnvelope) -> None:
        handled[env.event_id] += 1
        if env.event_id in flaky_ids and handled[env.event_id] == 1:
            raise ConnectionError("consumer briefly unavailable")

    workers = [OutboxRelay(pools, batch_size=batch_size, max_attempts=5, backoff_base=0.01, name=f"p24-{i}",
                           handlers={"test.exam_changed": handler}) for i in range(relays)]
    async with asyncio.timeout(20):
        while True:
            await asyncio.gather(*(w.run_once() for w in workers))
            rows = await _statuses(pools, tenant)
            if all(r["status"] != "pending" for r in rows.values()):
                break
            await asyncio.sleep(0.01)

    committed_ids = {e.event_id for e in committed}
    assert set(rows) == committed_ids  # rolled-back events never reached the outbox
    assert all(r["status"] == "published" for r in rows.values()), rows
    entries = await _stream(pools, tenant)
    delivered = [fields["event_id"] for _, fields in entries]
    assert sorted(delivered) == sorted(committed_ids)  # every committed change, once each, nothing else
    assert not {e.event_id for e in rolled_back} & set(delivered)
    assert all(handled[e] == 2 for e in flaky_ids)  # the handler ran again; the Stream got no second entry
    assert set(handled) == committed_ids

    # A consumer applies each delivery under (event_id, consumer) dedupe: once per event, in order.
    projection: dict[str, str] = {}
    applied: list[str] = []
    for _, fields in entries:
        env = EventEnvelope.from_json(fields["event"])
        async with pools.transaction(tenant) as conn:
            if await mark_consumed(conn, env.event_id, "projector", tenant):
                applied.append(env.event_id)
                projection[env.target_id] = f"v{env.payload['seq']}"
    assert sorted(applied) == sorted(committed_ids)
    assert projection == titles  # the consumer's view equals the committed database state
    async with pools.transaction(tenant) as conn:
        db = {r["id"]: r["title"] for r in await (await conn.execute("SELECT id::text AS id, title FROM exams"))
              .fetchall()}
    assert db == titles


async def test_mark_consumed_is_true_once_per_consumer(pools: PoolManager, tenant_id: str) -> None:
    event_id = str(uuid.uuid4())
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant_id,))
        assert await mark_consumed(conn, event_id, "projector", tenant_id) is True
        assert await mark_consumed(conn, event_id, "projector", tenant_id) is False
        assert await mark_consumed(conn, event_id, "notifier", tenant_id) is True


async def test_rolled_back_event_is_never_published(pools: PoolManager, tenant_id: str) -> None:
    kept = await _business_event(pools, tenant_id, str(uuid.uuid4()), 0, create=True)
    with pytest.raises(RuntimeError):
        async with pools.transaction(tenant_id) as conn:
            lost = await add_event(conn, tenant_id=tenant_id, event_type="test.lost", target_type="exam",
                                   target_id="x", payload={})
            raise RuntimeError("business rule failed")
    relay = OutboxRelay(pools, batch_size=50, name="rollback")
    rows = await _drain(relay, pools, tenant_id)
    assert set(rows) == {kept.event_id}
    ids = [fields["event_id"] for _, fields in await _stream(pools, tenant_id)]
    assert ids == [kept.event_id] and lost.event_id not in ids


async def test_two_relays_publish_each_event_once_in_aggregate_order(pools: PoolManager, tenant_id: str) -> None:
    aggregates, per_aggregate = 8, 25
    published_by: dict[str, int] = defaultdict(int)
    pubsub = pools.redis.pubsub()
    await pubsub.subscribe(events_channel(tenant_id))

    def counting(name: str):
        async def handler(env: EventEnvelope) -> None:
            published_by[name] += 1
            await asyncio.sleep(random.uniform(0, 0.003))
        return handler

    relays = [OutboxRelay(pools, batch_size=7, poll_interval=0.5, name=f"r{i}",
                          handlers={"test.exam_changed": counting(f"r{i}")}) for i in range(2)]
    stop = asyncio.Event()
    runners = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        async def writer(exam_id: str) -> list[str]:
            out = []
            for seq in range(per_aggregate):
                out.append((await _business_event(pools, tenant_id, exam_id, seq, create=seq == 0)).event_id)
                await asyncio.sleep(random.uniform(0, 0.005))
            return out

        written = await asyncio.gather(*(writer(str(uuid.uuid4())) for _ in range(aggregates)))
        expected = {eid for ids in written for eid in ids}
        await _wait_published(pools, tenant_id, expected, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*runners)

    entries = await _stream(pools, tenant_id)
    ids = [fields["event_id"] for _, fields in entries]
    assert sorted(ids) == sorted(expected)  # every committed event exactly once
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, fields in entries:
        env = EventEnvelope.from_json(fields["event"])
        assert env.event_id == fields["event_id"] and env.tenant_id == tenant_id
        seqs[env.target_id].append(env.payload["seq"])
    assert all(s == list(range(per_aggregate)) for s in seqs.values()), seqs
    assert sum(published_by.values()) == len(expected)
    assert all(published_by[f"r{i}"] > 0 for i in range(2)), dict(published_by)  # both really worked
    # The pub/sub copies carry the stream id.
    messages = []
    async with asyncio.timeout(5):
        while len(messages) < len(expected):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg:
                messages.append(json.loads(msg["data"]))
    await pubsub.aclose()
    assert {m["event_id"]: m["stream_id"] for m in messages} == {f["event_id"]: sid for sid, f in entries}


async def test_notify_wakes_the_relay_before_the_poll(pools: PoolManager, tenant_id: str) -> None:
    relay = OutboxRelay(pools, batch_size=50, poll_interval=60, name="listener")
    stop = asyncio.Event()
    runner = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(5):
            await relay.listening.wait()
        await asyncio.sleep(0.3)  # let the start-up batch finish; the relay now sleeps on LISTEN
        env = await _business_event(pools, tenant_id, str(uuid.uuid4()), 0, create=True)
        started = time.monotonic()
        await _wait_published(pools, tenant_id, {env.event_id}, timeout=5)
        assert time.monotonic() - started < 2.0  # far below the 60 s poll
    finally:
        stop.set()
        await runner


def test_backoff_is_exponential_capped_and_jittered() -> None:
    for attempts in range(1, 15):
        full = min(60.0, 0.5 * 2 ** (attempts - 1))
        delays = [backoff_delay(attempts) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1


async def test_failing_handler_retries_with_backoff_then_fails_and_replays(pools: PoolManager,
                                                                           tenant_id: str) -> None:
    calls: list[float] = []
    failures = {"left": 3, "error": ConnectionError("workflow service unavailable")}

    async def flaky(env: EventEnvelope) -> None:
        calls.append(time.monotonic())
        if failures["left"] > 0:
            failures["left"] -= 1
            raise failures["error"]

    base = 0.1
    relay = OutboxRelay(pools, batch_size=10, max_attempts=2, backoff_base=base, name="flaky",
                        handlers={"test.flaky": flaky})
    env = await _business_event(pools, tenant_id, str(uuid.uuid4()), 0, create=True, event_type="test.flaky")
    rows = await _drain(relay, pools, tenant_id)
    # Three connection failures, more than max_attempts: retried, never counted, then published.
    assert rows[env.event_id]["status"] == "published" and rows[env.event_id]["attempts"] == 1
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert len(gaps) == 3
    for i, gap in enumerate(gaps):  # at least the jittered lower bound of each backoff step
        assert gap >= base * 2**i / 2 - 0.01, gaps
    # Each attempt sent the event again; the Stream holds it once.
    entries = [f for _, f in await _stream(pools, tenant_id)]
    assert [f["event_id"] for f in entries] == [env.event_id]

    # A handler that keeps failing logically: failed after max_attempts, dead-lettered, then replayed.
    failures.update(left=10**6, error=RuntimeError("no such exam"))
    dead = await _business_event(pools, tenant_id, str(uuid.uuid4()), 0, create=True, event_type="test.flaky")
    rows = await _drain(relay, pools, tenant_id)
    assert rows[dead.event_id]["status"] == "failed" and rows[dead.event_id]["attempts"] == 2
    assert "RuntimeError: no such exam" in rows[dead.event_id]["last_error"]
    failures["left"] = 0
    assert await replay_failed(pools, dead.event_id) is True
    assert await replay_failed(pools, dead.event_id) is False  # no longer failed
    rows = await _drain(relay, pools, tenant_id)
    assert rows[dead.event_id]["status"] == "published"
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT status FROM dlq_items WHERE reference_id = %s", (dead.event_id,))
        assert [r["status"] for r in await cur.fetchall()] == ["replayed"]


async def test_a_failed_event_holds_back_later_events_of_its_aggregate(pools: PoolManager, tenant_id: str) -> None:
    first_attempt = {"done": False}

    async def fail_first(env: EventEnvelope) -> None:
        if env.payload["seq"] == 0 and not first_attempt["done"]:
            first_attempt["done"] = True
            raise RuntimeError("transient")

    relay = OutboxRelay(pools, batch_size=50, backoff_base=0.4, name="order",
                        handlers={"test.exam_changed": fail_first})
    agg_a, agg_b = str(uuid.uuid4()), str(uuid.uuid4())
    a0 = await _business_event(pools, tenant_id, agg_a, 0, create=True)
    a1 = await _business_event(pools, tenant_id, agg_a, 1)
    b0 = await _business_event(pools, tenant_id, agg_b, 0, create=True)
    b1 = await _business_event(pools, tenant_id, agg_b, 1)
    for _ in range(2):  # the second round runs while a0 is still backing off
        await relay.run_once()
        rows = await _statuses(pools, tenant_id)
        assert rows[a0.event_id]["status"] == "pending" and rows[a0.event_id]["attempts"] == 1
        assert rows[a1.event_id]["status"] == "pending" and rows[a1.event_id]["attempts"] == 0
        assert rows[b0.event_id]["status"] == rows[b1.event_id]["status"] == "published"
        assert a1.event_id not in {f["event_id"] for _, f in await _stream(pools, tenant_id)}
    await _drain(relay, pools, tenant_id)
    first_seen: list[str] = []
    for _, fields in await _stream(pools, tenant_id):
        if fields["event_id"] not in first_seen:
            first_seen.append(fields["event_id"])
    assert first_seen.index(a0.event_id) < first_seen.index(a1.event_id)
    assert first_seen.index(b0.event_id) < first_seen.index(b1.event_id)


async def test_running_relay_retries_when_backoff_is_due_not_at_next_poll(pools: PoolManager,
                                                                          tenant_id: str) -> None:
    failures = {"left": 2}

    async def flaky(env: EventEnvelope) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise RuntimeError("not yet")

    relay = OutboxRelay(pools, batch_size=10, poll_interval=60, backoff_base=0.1, name="due",
                        handlers={"test.due": flaky})
    stop = asyncio.Event()
    runner = asyncio.create_task(relay.run(stop))
    try:
        env = await _business_event(pools, tenant_id, str(uuid.uuid4()), 0, create=True, event_type="test.due")
        await _wait_published(pools, tenant_id, {env.event_id}, timeout=5)  # 60 s poll never fires
    finally:
        stop.set()
        await runner
    assert failures["left"] == 0
