# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Property 21: a batch never runs more than ``max_concurrent`` child gradings at once.

Checked against the Temporal server's own record of each child's start and close time, not
only the workflow's counter.
"""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from activities.agent import GradeCall
from infra.constants import QUERY_PROGRESS, grading_workflow_id
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    choice,
    gf_settings,
    grading_workers,
    saver,
    seed_exam,
    seed_submission,
)
from workflows.batch import BatchInput, BatchOutput
from workflows.grading import ProgressView


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, delta in events:  # closes sort before starts at the same instant
        running += delta
        peak = max(peak, running)
    return peak


@settings(max_examples=3)
@given(n=st.integers(2, 5), max_concurrent=st.integers(1, 3))
async def test_property21_batch_respects_max_concurrent(temporal_client, pools, saver, gf_settings, task_queue,
                                                        tenant_id, n, max_concurrent):
    exam_id = await seed_exam(pools, tenant_id, [choice("q1")])
    subs = [await seed_submission(pools, tenant_id, exam_id, {"q1": "a"}) for _ in range(n)]

    async def slow(call: GradeCall) -> None:
        await asyncio.sleep(0.3)

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, grade_hook=slow) as cog:
        handle = await temporal_client.start_workflow(
            "BatchGradingWorkflow", BatchInput([s.grading_input(cog) for s in subs], max_concurrent),
            id=f"batch-{uuid.uuid4()}", task_queue=task_queue, result_type=BatchOutput)
        out = await handle.result()
        view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
    assert out.statuses == {s.submission_id: "completed" for s in subs}
    assert 1 <= out.max_running <= max_concurrent
    spans = []
    for s in subs:
        desc = await temporal_client.get_workflow_handle(grading_workflow_id(s.submission_id)).describe()
        assert desc.parent_id == handle.id
        spans.append((desc.start_time.timestamp(), desc.close_time.timestamp()))
    assert max_overlap(spans) == min(max_concurrent, n)  # bounded, yet really concurrent
    assert view.percentage == 100 and view.details["done"] == n and view.details["running"] == 0
