"""The relay's view of what waits: outbox backlog and open dead letters, sampled for the metrics.

:func:`run_backlog_sampler` runs beside the relay and, every ``metrics_sample_interval`` seconds,
sets ``gradeflow_outbox_pending_events``, ``gradeflow_outbox_oldest_pending_age_seconds``,
``gradeflow_outbox_failed_events`` (``outbox_backlog()``, a SECURITY DEFINER function: the relay has no
tenant context) and ``gradeflow_dead_letters{kind,status}`` (:func:`infra.events.dead_letters.dead_letter_counts`).
A failed sample (PostgreSQL down) keeps the last values and counts in
``gradeflow_backlog_sample_errors_total``; the next one tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from infra.db.pools import PoolManager
from infra.events import dead_letters
from infra.observability.metrics import (
    BACKLOG_SAMPLE_ERRORS,
    DEAD_LETTERS,
    OUTBOX_FAILED,
    OUTBOX_OLDEST_PENDING_AGE,
    OUTBOX_PENDING,
)

logger = logging.getLogger(__name__)

BACKLOG_SQL = "SELECT pending, oldest_pending_at, failed FROM outbox_backlog()"


@dataclass(frozen=True)
class Backlog:
    """The outbox's unpublished events at one moment."""

    pending: int
    """Events waiting to be published (due now or backing off)."""
    oldest_pending_age: float
    """Seconds since the oldest pending event was committed (0 when none waits)."""
    failed: int
    """Events given up and dead-lettered."""


async def outbox_backlog(pools: PoolManager) -> Backlog:
    """Read the backlog over every tenant."""
    async with pools.connection() as conn:
        row = await (await conn.execute(BACKLOG_SQL)).fetchone()
    assert row is not None
    oldest = row["oldest_pending_at"]
    age = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else 0.0
    return Backlog(pending=int(row["pending"]), oldest_pending_age=age, failed=int(row["failed"]))


async def sample_once(pools: PoolManager) -> Backlog:
    """Take one sample and set the gauges."""
    backlog = await outbox_backlog(pools)
    OUTBOX_PENDING.set(backlog.pending)
    OUTBOX_OLDEST_PENDING_AGE.set(backlog.oldest_pending_age)
    OUTBOX_FAILED.set(backlog.failed)
    counts = await dead_letters.dead_letter_counts(pools)
    for (kind, status), items in counts.items():
        DEAD_LETTERS.labels(kind, status).set(items)
    for labels in _stale_labels(set(counts)):
        DEAD_LETTERS.labels(*labels).set(0)  # a kind/status that emptied reads 0, not its last count
    return backlog


_seen_labels: set[tuple[str, str]] = set()


def _stale_labels(current: set[tuple[str, str]]) -> set[tuple[str, str]]:
    stale = _seen_labels - current
    _seen_labels.update(current)
    return stale


async def run_backlog_sampler(pools: PoolManager, interval: float, stop: asyncio.Event) -> None:
    """Sample every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await sample_once(pools)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the relay
            BACKLOG_SAMPLE_ERRORS.inc()
            logger.warning("outbox backlog sample failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
