# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Properties 1 and 2 of the grading agent, through real workflows on real services.

1. The agent's checkpoint thread is the workflow run id; the query's progress matches the
   latest checkpoint (questions done = grades in it, same checkpoint id).
2. A running agent heartbeats at least every half heartbeat timeout, even while one grader
   takes longer than the whole timeout, and the attempt survives.
"""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from activities.agent import GradeCall
from infra.constants import QUERY_PROGRESS
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    exams,
    expected_total,
    gf_settings,
    grader_calls,
    grading_workers,
    saver,
    seed,
)
from workflows.grading import GradingOutput, ProgressView

CHECKPOINTS_OF_THREAD_SQL = "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s"


@settings(max_examples=4)
@given(exam=exams(), concurrency=st.sampled_from([1, None]))
async def test_property1_thread_is_run_id_and_query_matches_latest_checkpoint(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id, exam, concurrency):
    questions, answers = exam
    s = await seed(pools, tenant_id, questions, answers)
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog, agent_max_concurrency=concurrency),
            id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput)
        await handle.result()
        view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
        run_id = (await handle.describe()).run_id
    tup = await saver.aget_tuple({"configurable": {"thread_id": run_id, "checkpoint_ns": ""}})
    assert tup is not None, "no checkpoint under thread_id == run id"
    assert view.details["thread_id"] == run_id
    grades = tup.checkpoint["channel_values"]["grades"]
    assert set(grades) == {q.id for q in questions}
    assert view.details["questions_done"] == len(grades) == view.details["questions_total"]
    assert view.details["checkpoint_id"] == tup.checkpoint["id"]
    async with saver.conn.connection() as conn:
        row = await (await conn.execute(CHECKPOINTS_OF_THREAD_SQL, (run_id,))).fetchone()
    assert row["n"] >= 3


class HeartbeatRecorder(Interceptor):
    """Records the time of every ``activity.heartbeat`` call and of activity start/end."""

    def __init__(self) -> None:
        self.beats: list[float] = []
        self.spans: list[tuple[float, float]] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, rec: HeartbeatRecorder) -> None:
        super().__init__(next)
        self.rec = rec

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        super().init(_Outbound(outbound, self.rec))

    async def execute_activity(self, input: ExecuteActivityInput):
        start = time.monotonic()
        try:
            return await super().execute_activity(input)
        finally:
            self.rec.spans.append((start, time.monotonic()))


class _Outbound(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor, rec: HeartbeatRecorder) -> None:
        super().__init__(next)
        self.rec = rec

    def heartbeat(self, *details) -> None:
        self.rec.beats.append(time.monotonic())
        super().heartbeat(*details)


@settings(max_examples=3)
@given(exam=exams(min_questions=1, max_questions=3), slow_index=st.integers(0, 2),
       heartbeat_timeout=st.floats(1.0, 1.6), slow_factor=st.floats(1.2, 2.0))
async def test_property2_agent_heartbeats_every_half_timeout_through_a_slow_grader(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id, exam, slow_index, heartbeat_timeout,
        slow_factor):
    questions, answers = exam
    slow_qid = questions[slow_index % len(questions)].id
    slow_s = slow_factor * heartbeat_timeout  # longer than the whole heartbeat timeout
    s = await seed(pools, tenant_id, questions, answers)

    async def slow_grader(call: GradeCall) -> None:
        if call.question_id == slow_qid:
            await asyncio.sleep(slow_s)

    rec = HeartbeatRecorder()
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, grade_hook=slow_grader,
                               agent_interceptors=[rec]) as cog:
        out = await temporal_client.execute_workflow(
            "GradingWorkflow", s.grading_input(cog, heartbeat_timeout_s=heartbeat_timeout, agent_max_attempts=1),
            id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput)
    assert out.status == "completed" and out.total == expected_total(questions, answers)
    assert len(rec.spans) == 1, "the agent activity was retried: a heartbeat timeout fired"
    start, end = rec.spans[0]
    assert end - start >= slow_s
    points = [start, *rec.beats, end]
    gaps = [b - a for a, b in zip(points, points[1:], strict=False)]
    assert max(gaps) <= heartbeat_timeout / 2 + 0.25, f"max heartbeat gap {max(gaps):.2f}s of {heartbeat_timeout:.2f}s"
    assert await grader_calls(pools, s) == {q.id: 1 for q in questions}
