"""The outbox relay: publishes committed outbox events to Redis, once per event id, in aggregate order.

A relay claims a batch with ``outbox_claim`` (``FOR UPDATE SKIP LOCKED``, so several relays never
publish the same row concurrently) and, for each event in id order, publishes it
(:class:`~infra.events.publish.StreamPublisher`: one Stream entry and one pub/sub message per event
id, however often it is sent), runs the handler registered for its type (e.g. the reconciler that
starts the grading workflow) and marks it published. A crash before the commit leaves the rows
pending: they are sent again and find their stream entry already there.

Failures are classified (:func:`~infra.events.failures.is_transient`):

- transient (Redis, PostgreSQL or Temporal unreachable): retried for as long as it lasts, with capped
  exponential backoff, never counted toward ``max_attempts``. A failed publish means Redis is down for
  every event: the batch ends and the relay pauses for the backoff. A failed handler holds back the
  other events of its type until the next batch.
- logical (a handler raises for this event): counted; after ``max_attempts`` the event is ``failed``
  and gets a dead-letter record (``dlq_items``) that :mod:`infra.events.dead_letters` replays or discards.

Metrics: every published event counts in ``gradeflow_relay_events_published_total{event_type}`` and
its commit-to-publication time in ``gradeflow_relay_publish_lag_seconds``; a status event that puts a
submission in a final status counts once in ``gradeflow_submissions_finalized_total{status}``.

Order per aggregate ``(tenant, target_type, target_id)``: an event is held back while an earlier event
of its aggregate is pending (failed in this batch, backing off, or claimed by another relay) or
``failed`` (dead-lettered), so a failure never opens a gap; discarding the dead letter lets the later
events go.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import inspect
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from infra.constants import EventType, SubmissionStatus
from infra.db.pools import PoolManager
from infra.events.backlog import run_backlog_sampler
from infra.events.failures import describe, is_transient
from infra.events.outbox import EventEnvelope
from infra.events.publish import Published, StreamPublisher
from infra.observability.metrics import (
    RELAY_EVENTS_PUBLISHED,
    RELAY_PUBLISH_LAG,
    SUBMISSIONS_FINALIZED,
    start_metrics_server,
)

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
                  AND e.status IN ('pending', 'failed') AND e.id <> ALL(%(ids)s))
"""
MARK_PUBLISHED_SQL = "SELECT outbox_mark_published(%s, %s)"
MARK_RETRY_SQL = "SELECT outbox_mark_retry(%s, %s, %s, %s) AS status"
MARK_TRANSIENT_SQL = "SELECT outbox_mark_transient(%s, %s, %s)"
DEAD_LETTER_SQL = "SELECT outbox_dead_letter(%s) AS dlq_id"
REPLAY_FAILED_SQL = "SELECT outbox_replay_failed(%s) AS replayed"

Handler = Callable[[EventEnvelope], Awaitable[None]]
EVERY_EVENT = "*"
"""Handler key run for every event, after the handler of its type (e.g. the webhook fan-out)."""
Aggregate = tuple[str, str, str]
FINAL_STATUSES = frozenset({SubmissionStatus.COMPLETED, SubmissionStatus.NEEDS_REVIEW, SubmissionStatus.FAILED,
                            SubmissionStatus.NEEDS_INTERVENTION})
"""Statuses a grading ends in (``needs_review`` until a reviewer acts)."""


class Outcome(enum.Enum):
    """What became of one claimed event in a batch."""

    PUBLISHED = "published"
    """Published and handled; marked published."""
    HELD = "held"
    """Failed logically: retry scheduled (or dead-lettered); later events of its aggregate wait."""
    HANDLER_DOWN = "handler_down"
    """Its handler could not reach a dependency: the rest of its type waits for the next batch."""
    REDIS_DOWN = "redis_down"
    """Publishing could not reach Redis: the batch ends and the relay pauses."""


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
    """Put a ``failed`` event back to ``pending`` with fresh attempts (its dead letter: ``replayed``).

    Returns whether the event was failed.
    """
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
        max_attempts: logical failures (a handler raising for the event) before it is dead-lettered;
            transient failures never count.
        stream_maxlen: approximate cap of each tenant stream.
        handlers: per event type, an async callback run after publishing (its failures are classified too);
            the one under :data:`EVERY_EVENT` (``"*"``) runs for every event, after its type's.
        name: label for logs.
        backoff_base: first retry delay, seconds.
        backoff_cap: longest retry delay, seconds (also the pace of retries through an outage).
        publish_timeout: seconds one publish may take before Redis counts as unreachable.
        dedupe_ttl: seconds Redis remembers an event id it appended (a re-send within it appends nothing).

    """

    def __init__(self, pools: PoolManager, *, batch_size: int = 100, poll_interval: float = 5.0,
                 max_attempts: int = 8, stream_maxlen: int = 10_000,
                 handlers: Mapping[str, Handler] | None = None, name: str = "relay",
                 backoff_base: float = 0.5, backoff_cap: float = 60.0, publish_timeout: float = 10.0,
                 dedupe_ttl: int = 7 * 86400) -> None:
        self.pools = pools
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.stream_maxlen = stream_maxlen
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.name = name
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.publish_timeout = publish_timeout
        self.publisher = StreamPublisher(pools.redis, stream_maxlen=stream_maxlen, marker_ttl=dedupe_ttl)
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests wait on it)."""
        self._wake = asyncio.Event()
        self._retries: list[float] = []  # heap of monotonic times at which our retries fall due
        self._redis_failures = 0  # consecutive publishes that could not reach Redis
        self._paused_until = 0.0  # monotonic time before which run() claims nothing (Redis is down)

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
            down_types: set[str] = set()  # event types whose handler could not reach a dependency
            for row in rows:
                aggregate = (row["tenant_id"], row["target_type"], row["target_id"])
                if aggregate in blocked or row["id"] in blocked_ids or row["event_type"] in down_types:
                    blocked.add(aggregate)
                    logger.debug("%s: holding back event %s", self.name, row["event_id"])
                    continue
                outcome = await self._process(conn, row)
                if outcome is Outcome.PUBLISHED:
                    published += 1
                    continue
                blocked.add(aggregate)
                if outcome is Outcome.HANDLER_DOWN:
                    down_types.add(row["event_type"])
                    heapq.heappush(self._retries, time.monotonic())  # the held-back rest: next batch
                elif outcome is Outcome.REDIS_DOWN:
                    break  # the rest of the batch stays pending, untouched
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

    async def _process(self, conn: psycopg.AsyncConnection[Any], row: dict[str, Any]) -> Outcome:
        """Publish one claimed row, run its handler and record the outcome."""
        envelope = EventEnvelope.from_row(row)
        published: Published | None = None
        try:
            async with asyncio.timeout(self.publish_timeout):
                published = await self.publisher.publish(envelope)
            self._redis_failures = 0
            handler = self.handlers.get(envelope.event_type)
            if handler is not None:
                await handler(envelope)
            every = self.handlers.get(EVERY_EVENT)
            if every is not None:
                await every(envelope)
        except Exception as exc:  # noqa: BLE001 - classified: transient retried forever, logical counted
            if is_transient(exc):
                return await self._retry_transient(conn, row, exc, redis_down=published is None)
            return await self._retry_logical(conn, row, exc)
        assert published is not None
        await conn.execute(MARK_PUBLISHED_SQL, (row["id"], published.stream_id))
        _count_published(row)
        logger.debug("%s: published %s %s as %s%s", self.name, envelope.event_type, envelope.event_id,
                     published.stream_id, "" if published.fresh else " (already on the stream)")
        return Outcome.PUBLISHED

    async def _retry_transient(self, conn: psycopg.AsyncConnection[Any], row: dict[str, Any], exc: Exception,
                               *, redis_down: bool) -> Outcome:
        """A dependency was unreachable: retry after a capped backoff; the attempt budget is untouched."""
        delay = backoff_delay(row["transient_failures"] + 1, base=self.backoff_base, cap=self.backoff_cap)
        heapq.heappush(self._retries, time.monotonic() + delay)
        error = describe(exc)
        await conn.execute(MARK_TRANSIENT_SQL, (row["id"], error, delay))
        if redis_down:
            self._redis_failures += 1
            pause = backoff_delay(self._redis_failures, base=self.backoff_base, cap=self.backoff_cap)
            self._paused_until = time.monotonic() + pause
            logger.warning("%s: cannot publish to Redis (%s); pausing %.2fs (event %s retried, not counted)",
                           self.name, error, pause, row["event_id"])
            return Outcome.REDIS_DOWN
        logger.warning("%s: handler of %s could not reach a dependency for event %s (%s); retry in %.2fs, "
                       "not counted", self.name, row["event_type"], row["event_id"], error, delay)
        return Outcome.HANDLER_DOWN

    async def _retry_logical(self, conn: psycopg.AsyncConnection[Any], row: dict[str, Any],
                             exc: Exception) -> Outcome:
        """The event failed on its own: count the attempt; past the budget, dead-letter it."""
        attempts = row["attempts"] + 1
        delay = backoff_delay(attempts, base=self.backoff_base, cap=self.backoff_cap)
        error = describe(exc)
        cur = await conn.execute(MARK_RETRY_SQL, (row["id"], error, delay, self.max_attempts))
        status = (await cur.fetchone() or {}).get("status")
        if status != "failed":
            heapq.heappush(self._retries, time.monotonic() + delay)
            logger.warning("%s: event %s (%s) attempt %d/%d failed: %s; retry in %.2fs", self.name,
                           row["event_id"], row["event_type"], attempts, self.max_attempts, error, delay)
            return Outcome.HELD
        cur = await conn.execute(DEAD_LETTER_SQL, (row["id"],))
        dlq_id = (await cur.fetchone() or {}).get("dlq_id")
        logger.error("%s: event %s (%s) failed %d times, last: %s; dead letter %s holds back the later events "
                     "of %s %s until `gradeflow dlq replay|discard %s`", self.name, row["event_id"],
                     row["event_type"], attempts, error, dlq_id, row["target_type"], row["target_id"], dlq_id)
        return Outcome.HELD

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; woken by NOTIFY, polling as a safety net."""
        listener = asyncio.create_task(self._listen(stop), name=f"{self.name}-listen")
        try:
            while not stop.is_set():
                paused = self._paused_until - time.monotonic()
                if paused > 0:  # Redis is down: only stop cuts the pause short, not new events
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), paused)
                    continue
                self._wake.clear()
                try:
                    published = await self.run_once()
                except Exception as exc:  # noqa: BLE001 - keep relaying; the next poll retries
                    if is_transient(exc):
                        logger.warning("%s: batch failed (%s); rows stay pending", self.name, describe(exc))
                    else:
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

def _count_published(row: dict[str, Any]) -> None:
    """Metrics of one published outbox row: count, lag, and a submission reaching a final status."""
    RELAY_EVENTS_PUBLISHED.labels(row["event_type"]).inc()
    occurred = row.get("occurred_at")
    if isinstance(occurred, datetime):
        RELAY_PUBLISH_LAG.observe(max(0.0, (datetime.now(UTC) - occurred).total_seconds()))
    payload = row.get("payload") or {}
    status = payload.get("status") if isinstance(payload, dict) else None
    if status not in FINAL_STATUSES:
        return
    if row["event_type"] == EventType.SUBMISSION_GRADED or (
            row["event_type"] in (EventType.SUBMISSION_STATUS, EventType.SUBMISSION_REVIEWED)
            and payload.get("from") not in (None, status)):
        SUBMISSIONS_FINALIZED.labels(status).inc()


async def run_relay(settings: Any, *, handlers: Mapping[str, Handler] | None = None,
                    stop: asyncio.Event | None = None) -> None:
    """Run a relay process until SIGTERM/SIGINT or ``stop``; shut down within ``shutdown_timeout``.

    Beside it: the process's metrics on ``relay_metrics_port`` (0: none) and the backlog sampler
    (:mod:`infra.events.backlog`, every ``metrics_sample_interval`` seconds).

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
    stop_metrics = start_metrics_server(int(getattr(settings, "relay_metrics_port", 0) or 0),
                                        str(getattr(settings, "metrics_host", "127.0.0.1")))
    sampler = asyncio.create_task(run_backlog_sampler(pools, float(getattr(settings, "metrics_sample_interval", 10.0)),
                                                      stop), name="outbox-backlog-sampler")
    relay = OutboxRelay(
        pools, batch_size=settings.outbox_batch_size, poll_interval=settings.outbox_poll_interval,
        max_attempts=settings.outbox_max_attempts, stream_maxlen=settings.outbox_stream_maxlen,
        handlers=handlers, name="relay", backoff_base=settings.outbox_backoff_base,
        backoff_cap=settings.outbox_backoff_cap, publish_timeout=settings.outbox_publish_timeout,
        dedupe_ttl=settings.outbox_dedupe_ttl_seconds,
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
        stop.set()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        if stop_metrics is not None:
            stop_metrics()
        await pools.close(timeout=min(5.0, settings.shutdown_timeout))
