"""Temporal Schedules of the platform (create or update, safe to call at every start-up)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from infra.constants import BACKUP_WORKFLOW, IDEMPOTENCY_PURGE_WORKFLOW, ORCHESTRATION_QUEUE
from workflows.backup import BackupWorkflowInput
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
    await _create_or_update(client, schedule_id, schedule)
    return schedule_id


BACKUP_SCHEDULE_ID = "gradeflow-nightly-backup"


def backup_schedule(*, at: str = "02:30", task_queue: str = ORCHESTRATION_QUEUE,
                    schedule_id: str = BACKUP_SCHEDULE_ID) -> Schedule:
    """The schedule that starts ``BackupWorkflow`` every day at ``at`` (``HH:MM``, UTC; overlaps skipped)."""
    hour, minute = (int(part) for part in at.split(":"))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            BACKUP_WORKFLOW, BackupWorkflowInput(), id=f"{schedule_id}-run", task_queue=task_queue),
        spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(hour)],
                                                          minute=[ScheduleRange(minute)])],
                          time_zone_name="UTC"),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_backup_schedule(client: Client, *, at: str = "02:30", task_queue: str = ORCHESTRATION_QUEUE,
                                 schedule_id: str = BACKUP_SCHEDULE_ID) -> str:
    """Create the nightly backup schedule, or bring an existing one up to date (``Settings.backup_time``)."""
    schedule = backup_schedule(at=at, task_queue=task_queue, schedule_id=schedule_id)
    await _create_or_update(client, schedule_id, schedule)
    return schedule_id


async def _create_or_update(client: Client, schedule_id: str, schedule: Schedule) -> None:
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)
