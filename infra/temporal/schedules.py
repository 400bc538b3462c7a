"""Temporal Schedules of the platform (create or update, safe to call at every start-up)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from infra.constants import IDEMPOTENCY_PURGE_WORKFLOW, ORCHESTRATION_QUEUE
from workflows.purge import PurgeInput

PURGE_SCHEDULE_ID = "gradeflow-idempotency-purge"


def purge_schedule(*, task_queue: str = ORCHESTRATION_QUEUE, every: timedelta = timedelta(hours=1),
                   schedule_id: str = PURGE_SCHEDULE_ID) -> Schedule:
    """The schedule that starts ``IdempotencyPurgeWorkflow`` every ``every`` (overlaps skipped)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            IDEMPOTENCY_PURGE_WORKFLOW, PurgeInput(), id=f"{schedule_id}-run", task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_purge_schedule(client: Client, *, task_queue: str = ORCHESTRATION_QUEUE,
                                every: timedelta = timedelta(hours=1),
                                schedule_id: str = PURGE_SCHEDULE_ID) -> str:
    """Create the purge schedule, or bring an existing one up to date.

    Args:
        client: Temporal client.
        task_queue: queue of the worker that registers the purge workflow and activity.
        every: interval between purges (``Settings.idempotency_purge_interval_minutes``).
        schedule_id: schedule id (tests use their own).

    Returns:
        The schedule id.

    """
    schedule = purge_schedule(task_queue=task_queue, every=every, schedule_id=schedule_id)
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)
    return schedule_id
