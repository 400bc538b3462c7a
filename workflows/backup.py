"""``BackupWorkflow``: the nightly database backup (started by a Temporal Schedule).

The schedule is kept by :func:`infra.temporal.schedules.ensure_backup_schedule` (time of day:
``GRADEFLOW_BACKUP_TIME``, UTC); the activity dumps, verifies and prunes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.backup import BackupActivities, BackupInput, BackupOutput
    from infra.constants import BACKUP_WORKFLOW


@dataclass
class BackupWorkflowInput:
    """Input of :class:`BackupWorkflow`."""

    reason: str = "schedule"
    """Why it runs (logged)."""
    directory: str = ""
    """Backup folder; empty: the worker's ``Settings.backup_path``."""


@workflow.defn(name=BACKUP_WORKFLOW)
class BackupWorkflow:
    """Runs the backup activity once, retried a few times on failure (never on a failed verification)."""

    @workflow.run
    async def run(self, inp: BackupWorkflowInput) -> BackupOutput:
        """Back up, verify, prune; return what was written."""
        return await workflow.execute_activity_method(
            BackupActivities.run_backup, BackupInput(reason=inp.reason, directory=inp.directory),
            start_to_close_timeout=timedelta(hours=3), heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(minutes=1),
                                     non_retryable_error_types=["BackupVerificationFailed", "BackupNotConfigured"]),
        )
