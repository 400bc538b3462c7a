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
    oldest_pending_at: datetime | None = None
    """When the oldest pending event was committed (``None`` when none waits)."""


async def outbox_backlog(pools: PoolManager) -> Backlog:
    """Read the backlog over every tenant."""
    async with pools.connection() as conn:
        row = await (await conn.execute(BACKLOG_SQL)).fetchone()
    assert row is not None
    oldest = row["oldest_pending_at"]
    age = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else 0.0
    return Backlog(pending=int(row["pending"]), oldest_pending_age=age, failed=int(row["failed"]),
                   oldest_pending_at=oldest)


class BacklogSampler:
    """Sets the backlog and dead-letter gauges from PostgreSQL (see the module docstring)."""

    def __init__(self, pools: PoolManager) -> None:
        self.pools = pools
        self._dead_letter_labels: set[tuple[str, str]] = set()

    async def sample(self) -> Backlog:
        """Take one sample and set the gauges."""
        backlog = await outbox_backlog(self.pools)
        OUTBOX_PENDING.set(backlog.pending)
        OUTBOX_OLDEST_PENDING_AGE.set(backlog.oldest_pending_age)
        OUTBOX_FAILED.set(backlog.failed)
        counts = await dead_letters.dead_letter_counts(self.pools)
        for (kind, status), items in counts.items():
            DEAD_LETTERS.labels(kind, status).set(items)
        for kind, status in self._dead_letter_labels - set(counts):
            DEAD_LETTERS.labels(kind, status).set(0)  # a kind/status that emptied reads 0, not its last count
        self._dead_letter_labels |= set(counts)
        return backlog

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Sample every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:  # noqa: BLE001 - metrics must never stop the relay
                BACKLOG_SAMPLE_ERRORS.inc()
                logger.warning("outbox backlog sample failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def run_backlog_sampler(pools: PoolManager, interval: float, stop: asyncio.Event) -> None:
    """Run a :class:`BacklogSampler` on ``pools`` every ``interval`` seconds until ``stop`` is set."""
    await BacklogSampler(pools).run(interval, stop)
