"""Dead letters against real PostgreSQL and Redis: a handler that keeps failing logically ends as a
``dlq_items`` record that holds its aggregate back until an operator replays or discards it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.db.pools import PoolManager
from infra.events.dead_letters import (
    DeadLetterError,
    discard_dead_letter,
    get_dead_letter,
    list_dead_letters,
    replay_dead_letter,
)
from infra.events.outbox import EventEnvelope
from infra.events.relay import OutboxRelay
from tests.integration.infra.events.outbox_support import dlq_rows, drain, emit, outbox, sequences, stream

ROOT = Path(__file__).resolve().parents[4]
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}


def _broken_relay(pools: PoolManager, broken: set[int], *, max_attempts: int = 3, batch_size: int = 100,
                  errors: list[str] | None = None) -> OutboxRelay:
    """A relay whose handler raises a logical error for the events whose ``seq`` is in ``broken``."""
    async def handler(env: EventEnvelope) -> None:
        if env.payload["seq"] in broken:
            raise KeyError(errors.pop(0) if errors else f"no rubric for {env.payload['seq']}")

    return OutboxRelay(pools, batch_size=batch_size, max_attempts=max_attempts, name="dlq",
                       handlers={"test.doc_changed": handler}, **FAST)


def _stuck(rows: dict) -> bool:  # type: ignore[type-arg]
    return all(r["status"] != "pending" or r["payload"]["seq"] in (2, 3) for r in rows.values())


async def test_a_logical_failure_is_dead_lettered_and_holds_its_aggregate_until_replayed(
        pools: PoolManager, tenant_id: str) -> None:
    broken = {1}
    relay = _broken_relay(pools, broken, max_attempts=3, errors=["first", "second", "third", "again"])
    agg, other = str(uuid.uuid4()), str(uuid.uuid4())
    events = [await emit(pools, tenant_id, agg, seq) for seq in range(4)]
    others = [await emit(pools, tenant_id, other, seq) for seq in (10, 11)]  # never broken
    rows = await drain(relay, pools, [tenant_id], done=_stuck)

    dead = events[1]
    assert rows[dead.event_id]["status"] == "failed" and rows[dead.event_id]["attempts"] == 3
    assert [rows[e.event_id]["status"] for e in events[2:]] == ["pending", "pending"]  # held back: no gap
    assert all(rows[e.event_id]["status"] == "published" for e in others)
    for _ in range(3):  # later batches neither claim nor publish them
        assert await relay.run_once() == 0
    assert sequences(await stream(pools.redis, tenant_id)) == {agg: [0, 1], other: [10, 11]}

    [item] = await list_dead_letters(pools, tenant_id=tenant_id)
    assert (item.kind, item.event_type, item.reference_id, item.status) == ("outbox", "test.doc_changed",
                                                                         dead.event_id, "open")
    assert item.attempts == 3 and item.blocking == 2
    assert item.first_error == item.last_error == "KeyError: 'third'"
    assert item.payload["event_id"] == dead.event_id and item.payload["payload"] == {"seq": 1}
    assert await get_dead_letter(pools, item.id) == item
    assert [r["id"] for r in await dlq_rows(pools, tenant_id)] == [item.id]  # visible to its tenant (RLS)
    assert await dlq_rows(pools, f"t-{uuid.uuid4().hex[:12]}") == []  # and to no other

    # Replayed while still broken: it fails again and the same record is re-opened and updated.
    assert (await replay_dead_letter(pools, item.id, actor="alice", reason="handler fixed")).status == "replayed"
    await drain(relay, pools, [tenant_id], done=_stuck)
    [again] = await list_dead_letters(pools, tenant_id=tenant_id)
    assert again.id == item.id and again.status == "open" and again.attempts == 6
    assert again.first_error == "KeyError: 'third'" and again.last_error.startswith("KeyError: 'no rubric")
    assert again.last_failed_at > item.last_failed_at and again.first_failed_at == item.first_failed_at

    broken.clear()
    replayed = await replay_dead_letter(pools, item.id, actor="alice", reason="handler fixed")
    assert (replayed.status, replayed.resolved_by) == ("replayed", "alice")
    rows = await drain(relay, pools, [tenant_id])
    assert all(r["status"] == "published" for r in rows.values())
    entries = await stream(pools.redis, tenant_id)
    assert sequences(entries) == {agg: [0, 1, 2, 3], other: [10, 11]}  # in order; the dead one appended once
    assert await list_dead_letters(pools, tenant_id=tenant_id) == []
    assert [i.status for i in await list_dead_letters(pools, tenant_id=tenant_id, status=None)] == ["replayed"]


async def test_discarding_a_dead_letter_lets_the_later_events_go(pools: PoolManager, tenant_id: str) -> None:
    relay = _broken_relay(pools, {0}, max_attempts=2)
    agg = str(uuid.uuid4())
    events = [await emit(pools, tenant_id, agg, seq) for seq in range(3)]
    await drain(relay, pools, [tenant_id], done=lambda rows: any(r["status"] == "failed" for r in rows.values()))
    [item] = await list_dead_letters(pools, tenant_id=tenant_id)
    assert item.blocking == 2

    discarded = await discard_dead_letter(pools, item.id, actor="bob", reason="obsolete")
    assert (discarded.status, discarded.resolved_by, discarded.blocking) == ("discarded", "bob", 2)
    rows = await drain(relay, pools, [tenant_id])
    assert [rows[e.event_id]["status"] for e in events] == ["discarded", "published", "published"]
    assert sequences(await stream(pools.redis, tenant_id)) == {agg: [0, 1, 2]}  # 0 was appended before its handler

    with pytest.raises(DeadLetterError, match=f"dead letter {item.id} is discarded, not open"):
        await replay_dead_letter(pools, item.id, actor="bob", reason="obsolete")
    with pytest.raises(DeadLetterError, match="not found"):
        await discard_dead_letter(pools, 2**62, actor="bob", reason="obsolete")
    with pytest.raises(DeadLetterError, match="not found"):
        await get_dead_letter(pools, 2**62)


async def test_a_dead_letter_does_not_starve_other_aggregates(pools: PoolManager, tenant_id: str) -> None:
    relay = _broken_relay(pools, {0}, max_attempts=1, batch_size=2)
    stuck, flowing = str(uuid.uuid4()), str(uuid.uuid4())
    for seq in range(6):  # more held-back events than a batch holds, all before the other aggregate's
        await emit(pools, tenant_id, stuck, seq)
    for seq in range(10, 13):  # never broken
        await emit(pools, tenant_id, flowing, seq)

    def flowed(rows: dict) -> bool:  # type: ignore[type-arg]
        return all(r["status"] == "published" for r in rows.values() if r["target_id"] == flowing)

    rows = await drain(relay, pools, [tenant_id], done=flowed)
    assert sorted(r["status"] for r in rows.values() if r["target_id"] == stuck) == ["failed"] + ["pending"] * 5
    [item] = await list_dead_letters(pools, tenant_id=tenant_id)
    assert item.blocking == 5


async def test_gradeflow_dlq_lists_shows_replays_and_discards(services, pools: PoolManager, tenant_id: str) -> None:
    relay = _broken_relay(pools, {0}, max_attempts=1)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    dead = [await emit(pools, tenant_id, agg, 0) for agg in (first, second)]
    await emit(pools, tenant_id, first, 1)
    await drain(relay, pools, [tenant_id], done=lambda rows: sum(r["status"] == "failed" for r in rows.values()) == 2)
    items = await list_dead_letters(pools, tenant_id=tenant_id)
    assert [i.reference_id for i in items] == [e.event_id for e in dead]

    def gradeflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", "dlq", *args], cwd=ROOT, env=services.env(),
                              capture_output=True, text=True, timeout=60)

    listed = gradeflow("list", "--tenant", tenant_id)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2  # one line per item
    assert lines[0].startswith(f"{items[0].id}\topen\toutbox\ttest.doc_changed\ttenant={tenant_id}\t")
    assert f"ref={dead[0].event_id}" in lines[0] and "blocking=1" in lines[0] and "KeyError" in lines[0]
    assert "blocking=0" in lines[1]

    shown = gradeflow("show", str(items[0].id))
    assert shown.returncode == 0, shown.stderr
    assert f"reference_id:      {dead[0].event_id}" in shown.stdout and '"seq": 0' in shown.stdout
    assert "audit: (none)" in shown.stdout

    replayed = gradeflow("replay", str(items[0].id), "--actor", "carol", "--reason", "handler fixed")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed dead letter {items[0].id}" in replayed.stdout
    discarded = gradeflow("discard", str(items[1].id), "--reason", "obsolete")
    assert discarded.returncode == 0, discarded.stderr
    assert (await outbox(pools, tenant_id))[dead[1].event_id]["status"] == "discarded"
    assert (await get_dead_letter(pools, items[0].id)).resolved_by == "carol"
    assert (await get_dead_letter(pools, items[1].id)).resolved_by == "operator-cli"
    audited = gradeflow("show", str(items[1].id)).stdout
    assert "resolution_reason: obsolete" in audited and "\tdiscard\tby operator-cli\tobsolete\t" in audited

    for args, message in ((("replay", str(items[0].id), "--reason", "again"),
                           f"dead letter {items[0].id} is replayed, not open"),
                          (("show", "999999999999"), "dead letter 999999999999 not found")):
        failed = gradeflow(*args)
        assert failed.returncode == 2
        assert failed.stderr.strip().splitlines() == [f"gradeflow: {message}"]
    assert gradeflow("list", "--tenant", f"t-{uuid.uuid4().hex[:12]}").stdout.strip() == "no open dead letters"
