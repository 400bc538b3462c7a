"""A relay process killed with SIGKILL mid-batch loses nothing and appends nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from infra.cache.keys import events_stream
from infra.db.pools import PoolManager
from infra.events.outbox import add_event, mark_consumed
from infra.events.relay import OutboxRelay

ROOT = Path(__file__).resolve().parents[4]
INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
STATUS_SQL = "SELECT event_id::text AS event_id, status FROM event_outbox"
EVENTS, BATCH = 300, 40

# The child is the real relay entry point (what `gradeflow relay` runs), with a slow handler so
# that each batch stays open long enough to be killed in the middle.
CHILD = """
import asyncio
from infra.events.relay import run_relay
from infra.settings import Settings

async def slow(envelope):
    await asyncio.sleep(0.005)

asyncio.run(run_relay(Settings(), handlers={"test.crash": slow}))
"""


async def _statuses(pools: PoolManager, tenant: str) -> Counter[str]:
    async with pools.transaction(tenant) as conn:
        rows = await (await conn.execute(STATUS_SQL)).fetchall()
    return Counter(r["status"] for r in rows)


async def _stream_ids(pools: PoolManager, tenant: str) -> list[tuple[str, dict[str, str]]]:
    return await pools.redis.xrange(events_stream(tenant))


async def test_sigkilled_relay_loses_nothing(services, pools: PoolManager, tenant_id: str, tmp_path: Path) -> None:
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant_id,))
        inserted = [
            (await add_event(conn, tenant_id=tenant_id, event_type="test.crash", target_type="doc",
                             target_id=f"d{i % 10}", payload={"n": i})).event_id
            for i in range(EVENTS)
        ]
    env = services.env() | {"GRADEFLOW_OUTBOX_BATCH_SIZE": str(BATCH), "GRADEFLOW_OUTBOX_POLL_INTERVAL": "0.2"}
    log = (tmp_path / "relay.log").open("w")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, cwd=ROOT, env=env,
                                                 stdout=log, stderr=log)
    try:
        # Kill it in the middle of its second batch: entries are on the stream, not yet committed.
        async with asyncio.timeout(30):
            while len(await _stream_ids(pools, tenant_id)) < BATCH + BATCH // 2:
                assert child.returncode is None, (tmp_path / "relay.log").read_text()
                await asyncio.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        log.close()

    await asyncio.sleep(0.2)  # PostgreSQL notices the dead backend and rolls its batch back
    after_kill = await _statuses(pools, tenant_id)
    on_stream_at_kill = len({f["event_id"] for _, f in await _stream_ids(pools, tenant_id)})
    assert after_kill["published"] < EVENTS and after_kill["pending"] > 0, after_kill
    # Some events reached Redis in the killed batch without being marked published.
    assert on_stream_at_kill > after_kill["published"], (on_stream_at_kill, after_kill)

    relay = OutboxRelay(pools, batch_size=100, name="successor")
    started = time.monotonic()
    async with asyncio.timeout(30):
        while (await _statuses(pools, tenant_id))["published"] < EVENTS:
            if not await relay.run_once():
                await asyncio.sleep(0.01)  # rows still locked by the dead backend
    recovery_s = time.monotonic() - started

    entries = await _stream_ids(pools, tenant_id)
    by_id = Counter(f["event_id"] for _, f in entries)
    assert set(by_id) == set(inserted)  # nothing lost
    # The successor sent the killed batch's events again; each is on the stream once, as it was.
    assert all(n == 1 for n in by_id.values()), {eid: n for eid, n in by_id.items() if n > 1}
    resent = on_stream_at_kill - after_kill["published"]
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT event_id::text AS event_id, stream_id FROM event_outbox")
        marked = {r["event_id"]: r["stream_id"] for r in await cur.fetchall()}
    assert marked == {f["event_id"]: sid for sid, f in entries}  # the outbox row names the one entry
    async with pools.transaction(tenant_id) as conn:
        applied = [await mark_consumed(conn, f["event_id"], "crash-test", tenant_id) for _, f in entries]
    assert all(applied) and len(applied) == EVENTS
    print(f"\n[outbox-crash] killed with {after_kill['published']} committed, {on_stream_at_kill} on stream; "
          f"{resent} sent again without a second entry; successor drained {after_kill['pending']} "
          f"in {recovery_s:.2f}s")


async def test_sigterm_stops_the_relay_cleanly(services, pools: PoolManager, tenant_id: str,
                                               tmp_path: Path) -> None:
    env = services.env() | {"GRADEFLOW_SHUTDOWN_TIMEOUT": "3"}
    log = (tmp_path / "relay.log").open("w")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, cwd=ROOT, env=env,
                                                 stdout=log, stderr=log)
    try:
        async with pools.transaction(tenant_id) as conn:
            await conn.execute(INSERT_TENANT_SQL, (tenant_id,))
            await add_event(conn, tenant_id=tenant_id, event_type="test.crash", target_type="doc",
                            target_id="d", payload={})
        async with asyncio.timeout(30):
            while (await _statuses(pools, tenant_id))["published"] < 1:
                assert child.returncode is None, (tmp_path / "relay.log").read_text()
                await asyncio.sleep(0.02)
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 10) == 0, (tmp_path / "relay.log").read_text()
        assert time.monotonic() - started < 3 + 5
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        log.close()
