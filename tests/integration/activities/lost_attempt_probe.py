"""A workflow running one activity whose first attempt is lost (its own module, so it runs sandboxed)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy


@workflow.defn(name="LostAttemptProbe")
class LostAttemptProbe:
    """Runs ``lost_attempt_cause_probe`` with a short heartbeat timeout and returns what it reports."""

    @workflow.run
    async def run(self, heartbeat_timeout_s: float) -> str:
        """The cause the second attempt reads for the first one's end."""
        return await workflow.execute_activity(
            "lost_attempt_cause_probe", start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout_s),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
            result_type=str)
