"""``IdempotencyPurgeWorkflow``: delete expired idempotency keys and old trace spans (run hourly by a Schedule).

The schedule itself is created by :func:`infra.temporal.schedules.ensure_purge_schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.maintenance import MaintenanceActivities, PurgeKeysInput
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


@workflow.defn(name=IDEMPOTENCY_PURGE_WORKFLOW)
class IdempotencyPurgeWorkflow:
    """Runs the purge activity once, with retries."""

    @workflow.run
    async def run(self, inp: PurgeInput) -> PurgeOutput:
        """Purge expired keys and old trace spans and report how many went."""
        result = await workflow.execute_activity_method(
            MaintenanceActivities.purge_expired_idempotency_keys, PurgeKeysInput(reason=inp.reason),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
        )
        return PurgeOutput(deleted=result.deleted, spans_deleted=result.spans_deleted)
