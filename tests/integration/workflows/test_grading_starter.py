"""start_grading and the outbox reconciler handler: one grading per submission, ever."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from infra.constants import EventType
from infra.events.outbox import EventEnvelope
from infra.temporal.starter import SUBMISSION_KEY, TENANT_KEY, TRACE_KEY, make_reconciler_handler, start_grading
from tests.integration.workflows.harness import choice, grader_calls, grading_workers, seed, submission
from workflows.grading import GradingOutput


def _received(s, *, event_type: str = EventType.SUBMISSION_RECEIVED) -> EventEnvelope:
    return EventEnvelope(
        event_id=str(uuid.uuid4()), event_type=event_type, tenant_id=s.tenant_id, actor_id=None,
        target_type="submission", target_id=s.submission_id, version=1, occurred_at=datetime.now(UTC),
        trace_id=s.trace_id,
        payload={"submission_id": s.submission_id, "exam_id": s.exam_id, "student_id": "st", "trace_id": s.trace_id},
    )


async def test_start_grading_is_idempotent_and_never_reruns_a_finished_grading(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {"q1": "a"})
    kwargs = dict(submission_id=s.submission_id, tenant_id=tenant_id, exam_id=s.exam_id, trace_id=s.trace_id,
                  task_queue=task_queue)
    # Nothing polls yet: both starts land on the same running workflow.
    first = await start_grading(temporal_client, cognitive_queue=f"{task_queue}-cog", **kwargs)
    second = await start_grading(temporal_client, cognitive_queue=f"{task_queue}-cog", **kwargs)
    assert first == second == f"grade-{s.submission_id}"
    handle = temporal_client.get_workflow_handle(first, result_type=GradingOutput)
    run_id = (await handle.describe()).run_id
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue):
        assert (await handle.result()).status == "completed"
        # Finished: a third start (e.g. a redelivered outbox event) is accepted but starts nothing.
        assert await start_grading(temporal_client, cognitive_queue=f"{task_queue}-cog", **kwargs) == first
    desc = await handle.describe()
    assert desc.run_id == run_id and desc.status == WorkflowExecutionStatus.COMPLETED
    attrs = desc.typed_search_attributes
    assert (attrs.get(TENANT_KEY), attrs.get(TRACE_KEY), attrs.get(SUBMISSION_KEY)) == (
        tenant_id, s.trace_id, s.submission_id)
    assert await desc.memo_value("tenant_id") == tenant_id
    assert await grader_calls(pools, s) == {"q1": 1}


async def test_reconciler_handler_starts_grading_from_submission_received(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {"q1": "b"})
    other = await seed(pools, tenant_id, [choice("q1")], {"q1": "b"})
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        handler = make_reconciler_handler(temporal_client, task_queue=task_queue, cognitive_queue=cog)
        event = _received(s)
        await handler(_received(other, event_type=EventType.SUBMISSION_GRADED))  # not ours: ignored
        await handler(event)
        handle = temporal_client.get_workflow_handle(f"grade-{s.submission_id}", result_type=GradingOutput)
        run_id = (await handle.describe()).run_id
        await handler(event)  # redelivery while running: same run
        assert (await handle.describe()).run_id == run_id
        out = await handle.result()
        await handler(event)  # redelivery after completion: nothing new
    desc = await handle.describe()
    assert desc.run_id == run_id and out.status == "completed" and out.total == 0.0
    assert await desc.memo_value("trace_id") == s.trace_id
    with pytest.raises(RPCError):
        await temporal_client.get_workflow_handle(f"grade-{other.submission_id}").describe()
    assert (await submission(pools, s))["status"] == "completed"
    assert await grader_calls(pools, s) == {"q1": 1}
