"""GradingWorkflow end to end on real Temporal/PostgreSQL/Redis: happy path, review, query, CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ActivityError, ApplicationError

from infra.cache import keys
from infra.constants import QUERY_PROGRESS, SIGNAL_EXTERNAL_EVENT, UPDATE_REVIEW
from infra.temporal.starter import start_grading
from tests.integration.workflows.harness import (
    choice,
    exams,
    expected_total,
    fetch_all,
    grader_calls,
    grading_workers,
    numeric,
    seed,
    submission,
    text,
)
from workflows.grading import ExternalEvent, GradingOutput, ProgressView, ReviewAck, ReviewInput

TEMPORAL_CLI = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "temporal"
QUESTIONS = [choice("q1"), numeric("q2"), text("q3")]
ANSWERS = {"q1": "a", "q2": 2.05, "q3": "Photosynthesys makes glucose"}


async def _wait_stage(handle, stage: str, timeout: float = 20) -> ProgressView:
    deadline = time.monotonic() + timeout
    while True:
        view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
        if view.stage == stage:
            return view
        assert time.monotonic() < deadline, f"stage {stage!r} not reached; last {view}"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def awaiting_review(temporal_client, pools, saver, gf_settings, task_queue: str,
                          tenant_id: str) -> AsyncIterator[tuple[Any, Any]]:
    """A seeded submission whose workflow is flagged (threshold 0.99) and waiting in ``needs_review``.

    Yields ``(seeded submission, workflow handle)`` while the workers run.
    """
    s = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog, low_confidence_threshold=0.99), id=f"grade-{s.submission_id}",
            task_queue=task_queue, result_type=GradingOutput)
        await _wait_stage(handle, "needs_review")
        yield s, handle


async def test_grading_completes_persists_caches_and_emits_outbox(temporal_client, pools, saver, gf_settings,
                                                                  task_queue, tenant_id):
    s = await seed(pools, tenant_id, QUESTIONS[:2], {"q1": "a", "q2": 7})
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        wf_id = await start_grading(temporal_client, submission_id=s.submission_id, tenant_id=tenant_id,
                                    exam_id=s.exam_id, trace_id=s.trace_id, task_queue=task_queue,
                                    cognitive_queue=cog)
        handle = temporal_client.get_workflow_handle(wf_id, result_type=GradingOutput)
        out = await handle.result()
        view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
    assert out.status == "completed" and out.total == 2.0 and out.max_total == 5.0 and out.flagged == []
    row = await submission(pools, s)
    assert row["status"] == "completed" and float(row["total"]) == 2.0 and float(row["max_total"]) == 5.0
    results = await fetch_all(pools, tenant_id, "SELECT question_id, score FROM grading_results "
                              "WHERE submission_id=%s ORDER BY question_id", (s.submission_id,))
    assert [(r["question_id"], float(r["score"])) for r in results] == [("q1", 2.0), ("q2", 0.0)]
    events = await fetch_all(pools, tenant_id, "SELECT event_type, trace_id, payload FROM event_outbox "
                             "WHERE target_id=%s ORDER BY id", (s.submission_id,))
    assert [e["event_type"] for e in events] == ["submission.status_changed", "submission.graded"]
    assert all(e["trace_id"] == s.trace_id for e in events)
    assert all(e["payload"]["exam_id"] == s.exam_id for e in events)  # exam feeds can follow them
    cached = json.loads(await pools.redis.get(keys.submission_key(tenant_id, s.submission_id)))
    assert cached["status"] == "completed" and cached["total"] == 2.0 and len(cached["results"]) == 2
    assert view.stage == "completed" and view.percentage == 100 and view.updated_at
    assert view.details["questions_done"] == 2 and view.details["questions_total"] == 2
    assert await grader_calls(pools, s) == {"q1": 1, "q2": 1}
    desc = await handle.describe()
    assert (await desc.memo_value("trace_id")) == s.trace_id
    assert desc.typed_search_attributes is not None
    # What an operator sees in the Web UI: the summary and the current details.
    assert s.submission_id in (await desc.static_summary() or "")
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue):
        metadata = await handle.query("__temporal_workflow_metadata")
    assert "**completed** · 100% · 2/2 questions graded" in str(metadata)


async def test_lone_grading_takes_two_workflow_tasks_and_no_signal(temporal_client, pools, saver, gf_settings,
                                                                   task_queue, tenant_id):
    """Load and persist run as local activities and a short run sends no progress signal.

    Each workflow task is a round trip through the Temporal server and a replay on the worker: a lone
    grading used to take six (start, load, a start signal, a periodic signal, agent, persist).
    """
    s = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog), id=f"grade-{s.submission_id}", task_queue=task_queue,
            result_type=GradingOutput)
        out = await handle.result()
        history = await handle.fetch_history()
    assert out.status == "completed"
    kinds = [e.event_type for e in history.events]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert scheduled == ["run_grading_agent"]
    assert markers.count("core_local_activity") == 2  # load and persist
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) == 0
    assert kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 2


async def test_flagged_submission_waits_for_review_then_applies_overrides(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id, services):
    async with awaiting_review(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (s, handle):
        view = await _wait_stage(handle, "needs_review")
        assert 0 <= view.percentage <= 100 and view.details["flagged"]
        assert (await submission(pools, s))["status"] == "needs_review"

        # Property 20 through the operator's tool: the Temporal CLI prints the progress.
        # (async subprocess: the workers answering the query run on this event loop)
        proc = await asyncio.create_subprocess_exec(
            str(TEMPORAL_CLI), "workflow", "query", "--workflow-id", handle.id, "--type", QUERY_PROGRESS,
            "--address", services.temporal_address, "--output", "json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()
        printed = stdout.decode()
        assert '"needs_review"' in printed and '"percentage"' in printed and "updated_at" in printed

        await handle.signal(SIGNAL_EXTERNAL_EVENT, ExternalEvent("rubric.changed", {"question_id": "q3"}))
        for _ in range(50):
            view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
            if view.details["external_events"]:
                break
            await asyncio.sleep(0.1)
        assert view.details["external_events"][0]["event_type"] == "rubric.changed"
        assert view.details["external_events"][0]["payload"] == {"question_id": "q3"}

        ack = await handle.execute_update(UPDATE_REVIEW, ReviewInput("rev-1", {"q3": 4.0}), result_type=ReviewAck)
        assert ack.accepted
        with pytest.raises(WorkflowUpdateFailedError):  # a second decision is refused by the validator
            await handle.execute_update(UPDATE_REVIEW, ReviewInput("rev-2"))
        out = await handle.result()
    assert out.status == "completed" and out.total == 2.0 + 3.0 + 4.0
    row = await submission(pools, s)
    assert row["status"] == "completed" and float(row["total"]) == 9.0
    q3 = await fetch_all(pools, tenant_id, "SELECT score, overridden FROM grading_results "
                         "WHERE submission_id=%s AND question_id='q3'", (s.submission_id,))
    assert float(q3[0]["score"]) == 4.0 and q3[0]["overridden"] is True


async def _results(pools, tenant_id: str, s) -> dict[str, dict]:
    rows = await fetch_all(pools, tenant_id, "SELECT question_id, score, feedback, overridden, flagged "
                           "FROM grading_results WHERE submission_id=%s ORDER BY question_id", (s.submission_id,))
    return {r["question_id"]: {**r, "score": float(r["score"])} for r in rows}


async def test_review_with_feedback_only_changes_the_feedback_not_the_score(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id):
    async with awaiting_review(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (s, handle):
        before = await _results(pools, tenant_id, s)
        total_before = float((await submission(pools, s))["total"])
        review = ReviewInput("rev-1", feedback={"q3": "Spelling: photosynthesis."})
        assert (await handle.execute_update(UPDATE_REVIEW, review, result_type=ReviewAck)).accepted
        out = await handle.result()
    after = await _results(pools, tenant_id, s)
    assert out.status == "completed" and out.total == total_before
    row = await submission(pools, s)
    assert row["status"] == "completed" and float(row["total"]) == total_before
    assert after["q3"]["feedback"] == "Spelling: photosynthesis." != before["q3"]["feedback"]
    assert after["q3"]["score"] == before["q3"]["score"] and after["q3"]["overridden"] is True
    assert {q: after[q] for q in ("q1", "q2")} == {q: before[q] for q in ("q1", "q2")}  # untouched
    events = await fetch_all(pools, tenant_id, "SELECT payload FROM event_outbox WHERE target_id=%s "
                             "AND event_type='submission.reviewed'", (s.submission_id,))
    assert [e["payload"]["feedback"] for e in events] == [{"q3": "Spelling: photosynthesis."}]


async def test_review_with_feedback_for_an_unknown_question_applies_nothing(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id):
    async with awaiting_review(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (s, handle):
        before = await _results(pools, tenant_id, s)
        review = ReviewInput("rev-1", {"q3": 4.0}, feedback={"q3": "fine", "q9": "no such question"})
        await handle.execute_update(UPDATE_REVIEW, review, result_type=ReviewAck)
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    cause = err.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "InvalidOverride"
    assert await _results(pools, tenant_id, s) == before  # the score override was rolled back with it
    assert (await submission(pools, s))["status"] == "needs_review"


async def test_review_deadline_leaves_submission_in_needs_review(temporal_client, pools, saver, gf_settings,
                                                                 task_queue, tenant_id):
    s = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        out = await temporal_client.execute_workflow(
            "GradingWorkflow", s.grading_input(cog, low_confidence_threshold=0.99, review_deadline_s=1),
            id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput)
    assert out.status == "needs_review" and out.flagged
    assert (await submission(pools, s))["status"] == "needs_review"


@settings(max_examples=3)
@given(exam=exams(min_questions=3, max_questions=5), grade_s=st.floats(0.3, 0.45),
       moments=st.lists(st.floats(0.01, 0.25), min_size=1, max_size=40))
async def test_property20_running_workflow_query_reports_stage_percentage_time(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id, exam, grade_s, moments):
    questions, answers = exam
    s = await seed(pools, tenant_id, questions, answers)
    seen: list[ProgressView] = []
    # Signals at most every 0.25 s, so a run of 3 questions at >= 0.3 s each reports progress midway.
    signalling = gf_settings.model_copy(update={"progress_signal_interval": 0.25})

    async def slow(call) -> None:
        await asyncio.sleep(grade_s)

    async with grading_workers(temporal_client, pools, saver, signalling, task_queue, grade_hook=slow) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog, agent_max_concurrency=1), id=f"grade-{s.submission_id}",
            task_queue=task_queue, result_type=GradingOutput)
        # Query at the generated moments (cycled) until the workflow has completed.
        i = 0
        while not (seen and seen[-1].stage == "completed"):
            seen.append(await handle.query(QUERY_PROGRESS, result_type=ProgressView))
            await asyncio.sleep(moments[i % len(moments)])
            i += 1
        out = await handle.result()
    assert out.status == "completed" and out.total == expected_total(questions, answers)
    running = [v for v in seen if v.stage == "grading"]
    assert running, "never observed the grading stage"
    for v in seen:
        assert v.stage and 0 <= v.percentage <= 100 and v.updated_at
        datetime.fromisoformat(v.updated_at)  # an ISO 8601 time
    for v in running:
        assert 0 <= v.details["questions_done"] <= v.details["questions_total"] == len(questions)
    percentages = [v.percentage for v in seen]
    assert percentages == sorted(percentages)  # progress never goes backwards
    times = [datetime.fromisoformat(v.updated_at) for v in seen]
    assert times == sorted(times)  # nor does its update time
    assert len({v.details["questions_done"] for v in running}) >= 2  # progress moved while running
    assert seen[-1].percentage == 100 and seen[-1].details["questions_done"] == len(questions)
