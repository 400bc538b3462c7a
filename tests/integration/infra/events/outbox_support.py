"""Helpers of the relay fault tests: events on plain aggregates, outbox and stream snapshots, a redis-server
of the test's own that it stops and starts by PID."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from infra.cache.keys import events_stream
from infra.db.pools import PoolManager
from infra.events.outbox import EventEnvelope, add_event
from infra.events.relay import OutboxRelay
from infra.stack.embedded import die_with_parent, redis_server_path

INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
OUTBOX_SQL = """
SELECT id, event_id::text AS event_id, event_type, target_id, status, attempts, transient_failures, last_error,
       stream_id, payload
  FROM event_outbox ORDER BY id
"""
DLQ_SQL = "SELECT * FROM dlq_items ORDER BY id"


async def emit(pools: PoolManager, tenant: str, aggregate: str, seq: int, *,
               event_type: str = "test.doc_changed") -> EventEnvelope:
    """Commit one event of ``aggregate`` (a ``doc``) carrying its sequence number."""
    async with pools.transaction(tenant) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant,))
        return await add_event(conn, tenant_id=tenant, event_type=event_type, target_type="doc",
                               target_id=aggregate, payload={"seq": seq})


async def outbox(pools: PoolManager, tenant: str) -> dict[str, dict[str, Any]]:
    """The tenant's outbox rows by event id."""
    async with pools.transaction(tenant) as conn:
        return {r["event_id"]: r for r in await (await conn.execute(OUTBOX_SQL)).fetchall()}


async def dlq_rows(pools: PoolManager, tenant: str) -> list[dict[str, Any]]:
    """The tenant's dead-letter records (read under its RLS context)."""
    async with pools.transaction(tenant) as conn:
        return list(await (await conn.execute(DLQ_SQL)).fetchall())


async def stream(redis: aioredis.Redis, tenant: str) -> list[tuple[str, EventEnvelope]]:
    """The tenant's Stream: (entry id, envelope), oldest first."""
    entries = await redis.xrange(events_stream(tenant))
    out = []
    for entry_id, fields in entries:
        envelope = EventEnvelope.from_json(fields["event"])
        assert envelope.event_id == fields["event_id"]
        out.append((entry_id, envelope))
    return out


def sequences(entries: Iterable[tuple[str, EventEnvelope]]) -> dict[str, list[int]]:
    """Per aggregate, the ``seq`` of each Stream entry in Stream order."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, envelope in entries:
        seqs[envelope.target_id].append(envelope.payload["seq"])
    return dict(seqs)


async def until(check: Callable[[], Awaitable[Any]], *, timeout: float = 30, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or check}") from None


async def drain(relay: OutboxRelay, pools: PoolManager, tenants: Iterable[str], *, timeout: float = 30,
                done: Callable[[dict[str, dict[str, Any]]], bool] | None = None) -> dict[str, dict[str, Any]]:
    """Run batches until ``done(rows)`` (default: no row of ``tenants`` is pending); return the rows."""
    tenants = list(tenants)
    done = done or (lambda rows: all(r["status"] != "pending" for r in rows.values()))

    async def step() -> dict[str, dict[str, Any]] | None:
        await relay.run_once()
        rows: dict[str, dict[str, Any]] = {}
        for tenant in tenants:
            rows.update(await outbox(pools, tenant))
        return rows if done(rows) else None

    return await until(step, timeout=timeout, what="the relay to drain the outbox")


class RedisServer:
    """A redis-server of this test only, started and stopped by its PID, always on the same port."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it (no persistence) and wait until it answers PING."""
        argv = [str(redis_server_path()), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                "--daemonize", "no", "--save", "", "--appendonly", "no"]
        with (self.folder / "redis.log").open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=log,
                                                              preexec_fn=die_with_parent)
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            async def ping() -> bool:
                assert self._proc is not None and self._proc.returncode is None, (self.folder / "redis.log").read_text()
                with contextlib.suppress(OSError, RedisConnectionError):
                    return bool(await client.ping())
                return False

            await until(ping, timeout=20, what="the test's redis-server")
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """SIGTERM it and wait for it to exit (SIGKILL after 10 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
