"""``IdempotencyPurgeWorkflow``: hourly maintenance (run by a Schedule).

Deletes expired idempotency keys and old trace spans, then applies checkpoint retention (threads of
final submissions pruned to their last checkpoint, later deleted).

The schedule itself is created by :func:`infra.temporal.schedules.ensure_purge_schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.maintenance import CheckpointRetentionInput, MaintenanceActivities, PurgeKeysInput
    from infra.constants import IDEMPOTENCY_PURGE_WORKFLOW


@dataclass
class PurgeInput:
    """Input of :class:`IdempotencyPurgeWorkflow`."""

    reason: str = "schedule"
    """Why the purge runs (passed to the activity's log)."""


@dataclass
class PurgeOutput:
    """Result of :class:`IdempotencyPurgeWorkflow`."""

    deleted: int = 0
    """Expired keys removed."""
    spans_deleted: int = 0
    """Trace spans older than ``Settings.trace_retention_hours`` removed."""
    checkpoint_threads_pruned: int = 0
    """Checkpoint threads of final submissions cut down to their last checkpoint."""
    checkpoint_threads_deleted: int = 0
    """Checkpoint threads of submissions final for longer than the delete setting removed."""


CHECKPOINT_RETENTION_PATCH = "checkpoint-retention"
"""Patch id of the retention step (runs started before it replay without it)."""


@workflow.defn(name=IDEMPOTENCY_PURGE_WORKFLOW)
class IdempotencyPurgeWorkflow:
    """Runs the purge activity, then the checkpoint retention activity, each once with retries."""

    @workflow.run
    async def run(self, inp: PurgeInput) -> PurgeOutput:
        """Purge expired keys, old trace spans and old checkpoints; report how many went."""
        result = await workflow.execute_activity_method(
            MaintenanceActivities.purge_expired_idempotency_keys, PurgeKeysInput(reason=inp.reason),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
        )
        out = PurgeOutput(deleted=result.deleted, spans_deleted=result.spans_deleted)
        if workflow.patched(CHECKPOINT_RETENTION_PATCH):
            retention = await workflow.execute_activity_method(
                MaintenanceActivities.prune_checkpoints, CheckpointRetentionInput(reason=inp.reason),
                start_to_close_timeout=timedelta(minutes=2), heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
            )
            out.checkpoint_threads_pruned = retention.threads_pruned
            out.checkpoint_threads_deleted = retention.threads_deleted
        return out
