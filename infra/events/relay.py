"""The outbox relay: publishes committed outbox events to Redis, at least once, in aggregate order.

A relay claims a batch with ``outbox_claim`` (``FOR UPDATE SKIP LOCKED``, so several relays never
publish the same row concurrently) and, for each event in id order, appends it to the tenant's
Redis Stream, publishes it on the tenant's pub/sub channel, runs the handler registered for its type
(e.g. the reconciler that starts the grading workflow) and marks it published. A failure schedules a
retry with exponential backoff; after ``max_attempts`` the row is ``failed`` until
``outbox_replay_failed``. A crash before the commit leaves the rows pending: they are published again
with the same ``event_id`` and consumers dedupe.

Order per aggregate ``(tenant, target_type, target_id)``: an event is held back while an earlier event
of its aggregate is still pending (failed in this batch, backing off, or claimed by another relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import json
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg

from infra.cache.keys import events_channel, events_stream
from infra.db.pools import PoolManager
from infra.events.outbox import EventEnvelope

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "gradeflow_outbox"
LISTEN_SQL = "LISTEN gradeflow_outbox"
CLAIM_SQL = "SELECT * FROM outbox_claim(%s)"
SET_TENANT_SQL = "SELECT set_config('app.current_tenant', %s, true)"
BLOCKED_SQL = """
SELECT c.id FROM event_outbox c
 WHERE c.id = ANY(%(ids)s)
   AND EXISTS (SELECT 1 FROM event_outbox e
                WHERE e.tenant_id = c.tenant_id AND e.target_type = c.target_type
                  AND e.target_id = c.target_id AND e.id < c.id
                  AND e.status = 'pending' AND e.id <> ALL(%(ids)s))
"""
MARK_PUBLISHED_SQL = "SELECT outbox_mark_published(%s, %s)"
MARK_RETRY_SQL = "SELECT outbox_mark_retry(%s, %s, %s, %s) AS status"
REPLAY_FAILED_SQL = "SELECT outbox_replay_failed(%s) AS replayed"

Handler = Callable[[EventEnvelope], Awaitable[None]]
Aggregate = tuple[str, str, str]


def backoff_delay(attempts: int, *, base: float = 0.5, cap: float = 60.0) -> float:
    """Seconds to wait before the next attempt: exponential, capped, with "equal jitter".

    Args:
        attempts: attempts made so far (including the one that just failed), at least 1.
        base: delay after the first failure, before jitter.
        cap: longest delay, before jitter.

    Returns:
        A delay in ``[d/2, d]`` where ``d = min(cap, base * 2 ** (attempts - 1))``.

    """
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay / 2 + random.uniform(0, delay / 2)


async def replay_failed(pools: PoolManager, event_id: str) -> bool:
    """Put a ``failed`` event back to ``pending`` with fresh attempts; tell whether it was failed."""
    async with pools.connection() as conn, conn.transaction():
        cur = await conn.execute(REPLAY_FAILED_SQL, (event_id,))
        row = await cur.fetchone()
    return bool(row and row["replayed"])


class OutboxRelay:
    """Publishes outbox events to Redis Streams and pub/sub.

    Args:
        pools: the process's pool manager (PostgreSQL and Redis).
        batch_size: rows claimed per batch.
        poll_interval: seconds between safety-net polls when no notification arrives.
        max_attempts: attempts before an event is marked ``failed``.
        stream_maxlen: approximate cap of each tenant stream.
        handlers: per event type, an async callback run after publishing (a failure = publish failure).
        name: label for logs.
        backoff_base: first retry delay, seconds.
        backoff_cap: longest retry delay, seconds.

    """

    def __init__(self, pools: PoolManager, *, batch_size: int = 100, poll_interval: float = 5.0,
                 max_attempts: int = 8, stream_maxlen: int = 10_000,
                 handlers: Mapping[str, Handler] | None = None, name: str = "relay",
                 backoff_base: float = 0.5, backoff_cap: float = 60.0) -> None:
        self.pools = pools
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.stream_maxlen = stream_maxlen
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.name = name
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests wait on it)."""
        self._wake = asyncio.Event()
        self._retries: list[float] = []  # heap of monotonic times at which our retries fall due

    async def run_once(self) -> int:
        """Claim and process one batch in one transaction; return how many events were published."""
        published = 0
        now = time.monotonic()
        while self._retries and self._retries[0] <= now:  # this batch will claim those
            heapq.heappop(self._retries)
        async with self.pools.connection() as conn, conn.transaction():
            cur = await conn.execute(CLAIM_SQL, (self.batch_size,))
            rows = await cur.fetchall()
            if not rows:
                return 0
            blocked_ids = await self._blocked_ids(conn, rows)
            blocked: set[Aggregate] = set()
            for row in rows:
                aggregate = (row["tenant_id"], row["target_type"], row["target_id"])
                if aggregate in blocked or row["id"] in blocked_ids:
                    blocked.add(aggregate)
                    logger.debug("%s: holding back event %s behind an earlier one", self.name, row["event_id"])
                    continue
                if await self._process(conn, row):
                    published += 1
                else:
                    blocked.add(aggregate)
        return published

    async def _blocked_ids(self, conn: psycopg.AsyncConnection[Any], rows: list[dict[str, Any]]) -> set[int]:
        """Claimed rows with an earlier pending event of their aggregate outside this batch.

        Reads each tenant's rows under that tenant's RLS context (the app role sees no other rows).
        """
        by_tenant: dict[str, list[int]] = {}
        for row in rows:
            by_tenant.setdefault(row["tenant_id"], []).append(row["id"])
        blocked: set[int] = set()
        for tenant, ids in by_tenant.items():
            await conn.execute(SET_TENANT_SQL, (tenant,))
            cur = await conn.execute(BLOCKED_SQL, {"ids": ids})
            blocked.update(r["id"] for r in await cur.fetchall())
        return blocked

    async def _process(self, conn: psycopg.AsyncConnection[Any], row: dict[str, Any]) -> bool:
        """Publish one claimed row and record the outcome; return whether it was published."""
        envelope = EventEnvelope.from_row(row)
        try:
            stream_id = await self._publish(envelope)
            handler = self.handlers.get(envelope.event_type)
            if handler is not None:
                await handler(envelope)
        except Exception as exc:  # noqa: BLE001 - any failure is a publish failure, retried
            attempts = row["attempts"] + 1
            delay = backoff_delay(attempts, base=self.backoff_base, cap=self.backoff_cap)
            heapq.heappush(self._retries, time.monotonic() + delay)
            error = f"{type(exc).__name__}: {exc}"[:1000]
            cur = await conn.execute(MARK_RETRY_SQL, (row["id"], error, delay, self.max_attempts))
            status = (await cur.fetchone() or {}).get("status")
            logger.warning("%s: event %s (%s) attempt %d failed: %s; %s", self.name, envelope.event_id,
                           envelope.event_type, attempts, error,
                           "marked failed" if status == "failed" else f"retry in {delay:.2f}s")
            return False
        await conn.execute(MARK_PUBLISHED_SQL, (row["id"], stream_id))
        logger.debug("%s: published %s %s as %s", self.name, envelope.event_type, envelope.event_id, stream_id)
        return True

    async def _publish(self, envelope: EventEnvelope) -> str:
        """XADD to the tenant stream, then PUBLISH on the tenant channel; return the stream id."""
        redis = self.pools.redis
        body = envelope.to_json()
        stream_id = await redis.xadd(
            events_stream(envelope.tenant_id), {"event": body, "event_id": envelope.event_id},
            maxlen=self.stream_maxlen, approximate=True,
        )
        message = envelope.to_dict()
        message["stream_id"] = stream_id
        await redis.publish(events_channel(envelope.tenant_id),
                            json.dumps(message, separators=(",", ":"), default=str))
        return str(stream_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; woken by NOTIFY, polling as a safety net."""
        listener = asyncio.create_task(self._listen(stop), name=f"{self.name}-listen")
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    published = await self.run_once()
                except Exception:  # noqa: BLE001 - keep relaying; the next poll retries
                    logger.exception("%s: batch failed", self.name)
                    published = 0
                if published >= self.batch_size:
                    continue
                await self._sleep(stop)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Wait for a notification, ``stop``, a due retry or the poll interval, whichever is first."""
        timeout = self.poll_interval
        if self._retries:
            timeout = max(0.0, min(timeout, self._retries[0] - time.monotonic()))
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()

    async def _conninfo(self) -> str:
        """The pool's conninfo (psycopg-pool also accepts a sync or async callable there)."""
        source: Any = self.pools.pool.conninfo
        value = source() if callable(source) else source
        return str(await value if inspect.isawaitable(value) else value)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a dedicated autocommit connection on LISTEN; reconnect with backoff on errors."""
        attempt = 0
        while not stop.is_set():
            delay = 0.5
            try:
                conn = await psycopg.AsyncConnection.connect(await self._conninfo(), autocommit=True,
                                                             application_name=f"{self.name}-listen")
                async with conn:
                    await conn.execute(LISTEN_SQL)
                    self.listening.set()
                    attempt = 0
                    self._wake.set()  # catch up on anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling covers us while we reconnect
                attempt += 1
                delay = backoff_delay(attempt, base=0.5, cap=30.0)
                logger.warning("%s: LISTEN connection lost (%s); reconnecting in %.1fs", self.name, exc, delay)
            finally:
                self.listening.clear()
            await asyncio.sleep(delay)

async def run_relay(settings: Any, *, handlers: Mapping[str, Handler] | None = None,
                    stop: asyncio.Event | None = None) -> None:
    """Run a relay process until SIGTERM/SIGINT or ``stop``; shut down within ``shutdown_timeout``.

    Args:
        settings: :class:`infra.settings.Settings` (database and Redis URLs, outbox knobs).
        handlers: per event type callbacks (e.g. the ``submission.received`` reconciler).
        stop: external stop signal; a new one is made when omitted.

    """
    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError("the relay needs GRADEFLOW_DATABASE_URL and GRADEFLOW_REDIS_URL")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    pools = PoolManager.from_settings(settings, name="gradeflow-relay")
    await pools.open()
    relay = OutboxRelay(
        pools, batch_size=settings.outbox_batch_size, poll_interval=settings.outbox_poll_interval,
        max_attempts=settings.outbox_max_attempts, stream_maxlen=settings.outbox_stream_maxlen,
        handlers=handlers, name="relay",
    )
    task = asyncio.create_task(relay.run(stop), name="outbox-relay")
    try:
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        stop.set()
        try:
            await asyncio.wait_for(task, settings.shutdown_timeout)
        except TimeoutError:
            logger.warning("relay did not finish its batch within %.1fs; abandoned (rows stay pending)",
                           settings.shutdown_timeout)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sig in installed:
            loop.remove_signal_handler(sig)
        await pools.close(timeout=min(5.0, settings.shutdown_timeout))
