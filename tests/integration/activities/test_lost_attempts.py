"""Why an agent attempt was retried, as the next attempt reads it from Temporal (the heartbeat-timeout metric)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity
from temporalio.worker import Worker

from activities.agent import _lost_attempt_cause
from tests.integration.activities.lost_attempt_probe import LostAttemptProbe
from worker import workflow_runner


@activity.defn(name="lost_attempt_cause_probe")
async def lost_attempt_cause_probe() -> str:
    """Attempt 1 stalls without heartbeats (or raises); attempt 2 reports how attempt 1 ended."""
    if activity.info().attempt == 1:
        if activity.info().heartbeat_timeout == timedelta(seconds=30):  # the "raises" variant
            raise RuntimeError("attempt 1 fails")
        await asyncio.sleep(4)  # no heartbeat: the server times the attempt out after 1 s
        return "attempt 1 finished"
    return await _lost_attempt_cause()


async def _cause(temporal_client, task_queue: str, heartbeat_timeout_s: float) -> str:
    async with Worker(temporal_client, task_queue=task_queue, workflows=[LostAttemptProbe],
                      activities=[lost_attempt_cause_probe], workflow_runner=workflow_runner()):
        return await temporal_client.execute_workflow(
            LostAttemptProbe.run, heartbeat_timeout_s, id=f"lost-{uuid.uuid4()}", task_queue=task_queue,
            run_timeout=timedelta(seconds=60))


async def test_a_stalled_attempt_is_reported_as_a_heartbeat_timeout(temporal_client, task_queue):
    assert await _cause(temporal_client, task_queue, 1.0) == "heartbeat_timeout"


async def test_a_failed_attempt_is_reported_as_an_error(temporal_client, task_queue):
    assert await _cause(temporal_client, task_queue, 30.0) == "error"
