"""Maintenance activities: periodic clean-up that crosses tenants through narrow SQL functions.

The application role is bound by row-level security, so cross-tenant deletes go through the
``SECURITY DEFINER`` functions of ``migrations/0003``, ``0005`` and ``0010`` rather than a privileged role.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from temporalio import activity

from infra.db.pools import PoolManager
from infra.settings import get_settings
from infra.stores import checkpoints

logger = logging.getLogger(__name__)

PURGE_IDEMPOTENCY_SQL = "SELECT purge_expired_idempotency_keys() AS deleted"
PURGE_SPANS_SQL = "SELECT purge_old_trace_spans(%s) AS deleted"
SPAN_PURGE_CHUNK = 10_000
"""Rows ``purge_old_trace_spans`` deletes at most per call (its ``LIMIT`` in ``migrations/0005``)."""
SPAN_PURGE_BUDGET_SECONDS = 60.0
"""Time after which a run stops purging spans (well inside the activity's 2-minute timeout); the
next scheduled run carries on where it stopped."""
CHECKPOINT_CHUNK = 100
"""Threads ``prune_checkpoint_threads`` deletes, and prunes, at most per call (one short transaction)."""
CHECKPOINT_BUDGET_SECONDS = 60.0
"""Time after which a run stops pruning checkpoints; the next scheduled run carries on."""


@dataclass
class PurgeKeysInput:
    """Input of :meth:`MaintenanceActivities.purge_expired_idempotency_keys`."""

    reason: str = "schedule"
    """Why the purge runs (logged)."""
    trace_retention_hours: float | None = None
    """Trace spans older than this are deleted. ``None``: ``Settings.trace_retention_hours``."""


@dataclass
class PurgeKeysOutput:
    """Result of a purge."""

    deleted: int = 0
    """Expired idempotency keys removed."""
    spans_deleted: int = 0
    """Trace spans older than the retention removed."""


@dataclass
class CheckpointRetentionInput:
    """Input of :meth:`MaintenanceActivities.prune_checkpoints`."""

    reason: str = "schedule"
    """Why it runs (logged)."""
    retention_hours: float | None = None
    """Prune threads of submissions final for longer. ``None``: ``Settings.checkpoint_retention_hours``."""
    delete_after_hours: float | None = None
    """Delete threads of submissions final for longer. ``None``: ``Settings.checkpoint_delete_after_hours``."""
    chunk: int = CHECKPOINT_CHUNK
    """Threads per call and phase."""


@dataclass
class CheckpointRetentionOutput:
    """What a retention run did."""

    threads_pruned: int = 0
    """Threads cut down to their last checkpoint."""
    threads_deleted: int = 0
    """Threads deleted."""
    rows_deleted: int = 0
    """Checkpoint, blob and write rows deleted."""


class MaintenanceActivities:
    """Clean-up activities bound to the worker's pools.

    Args:
        pools: the process's pool manager.

    """

    def __init__(self, pools: PoolManager) -> None:
        self.pools = pools

    @activity.defn
    async def purge_expired_idempotency_keys(self, inp: PurgeKeysInput) -> PurgeKeysOutput:
        """Delete idempotency keys past their expiry and trace spans past the retention, for every tenant.

        Spans go in chunks of :data:`SPAN_PURGE_CHUNK`, one short transaction each, until a chunk
        comes back short or :data:`SPAN_PURGE_BUDGET_SECONDS` have passed.
        """
        async with self.pools.connection() as conn, conn.transaction():
            cur = await conn.execute(PURGE_IDEMPOTENCY_SQL)
            row = await cur.fetchone()
        deleted = int(row["deleted"] if row else 0)
        logger.info("purged %d expired idempotency keys (%s)", deleted, inp.reason)
        retention = inp.trace_retention_hours
        if retention is None:
            retention = get_settings().trace_retention_hours
        spans_deleted = 0
        deadline = time.monotonic() + SPAN_PURGE_BUDGET_SECONDS
        while True:
            async with self.pools.connection() as conn, conn.transaction():
                cur = await conn.execute(PURGE_SPANS_SQL, (retention,))
                row = await cur.fetchone()
            chunk = int(row["deleted"] if row else 0)
            spans_deleted += chunk
            if chunk < SPAN_PURGE_CHUNK:
                break
            activity.heartbeat(spans_deleted)
            if time.monotonic() >= deadline:
                logger.info("span purge stopped after %.0f s; the next run continues", SPAN_PURGE_BUDGET_SECONDS)
                break
        logger.info("purged %d trace spans older than %g h (%s)", spans_deleted, retention, inp.reason)
        return PurgeKeysOutput(deleted=deleted, spans_deleted=spans_deleted)

    @activity.defn
    async def prune_checkpoints(self, inp: CheckpointRetentionInput) -> CheckpointRetentionOutput:
        """Prune the checkpoint threads of final submissions to their last checkpoint; later delete them.

        In chunks of ``inp.chunk`` threads, one short transaction each, until a chunk comes back
        short or :data:`CHECKPOINT_BUDGET_SECONDS` have passed.
        """
        return await _prune_checkpoints(self.pools, inp)


async def _prune_checkpoints(pools: PoolManager, inp: CheckpointRetentionInput) -> CheckpointRetentionOutput:
    settings = get_settings()
    retention = inp.retention_hours if inp.retention_hours is not None else settings.checkpoint_retention_hours
    delete_after = (inp.delete_after_hours if inp.delete_after_hours is not None
                    else settings.checkpoint_delete_after_hours)
    out = CheckpointRetentionOutput()
    deadline = time.monotonic() + CHECKPOINT_BUDGET_SECONDS
    while True:
        async with pools.connection() as conn, conn.transaction():
            chunk = await checkpoints.prune_chunk(conn, prune_after_hours=retention, delete_after_hours=delete_after,
                                                  limit=inp.chunk)
        out.threads_pruned += chunk.threads_pruned
        out.threads_deleted += chunk.threads_deleted
        out.rows_deleted += chunk.rows_deleted
        if chunk.threads_pruned < inp.chunk and chunk.threads_deleted < inp.chunk:
            break
        activity.heartbeat(out.rows_deleted)
        if time.monotonic() >= deadline:
            logger.info("checkpoint retention stopped after %.0f s; the next run continues", CHECKPOINT_BUDGET_SECONDS)
            break
    logger.info("checkpoint retention (%s): %d threads pruned to their last checkpoint (final > %g h), %d deleted "
                "(final > %g h), %d rows deleted", inp.reason, out.threads_pruned, retention, out.threads_deleted,
                delete_after, out.rows_deleted)
    return out
