"""Recovery paths of the grading agent at workflow level: resume, restart, intervention (props 3, 18)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from activities.agent import GradeCall
from agents.checkpointer import open_saver
from infra.constants import QUERY_PROGRESS
from tests.integration.workflows.harness import (
    POOL_KWARGS,
    choice,
    exams,
    expected_total,
    grader_calls,
    grading_workers,
    numeric,
    seed,
    submission,
)
from workflows.grading import GradingOutput, ProgressView

QUESTIONS = [choice("q1"), numeric("q2"), choice("q3", "b"), numeric("q4", 5.0)]
ANSWERS = {"q1": "a", "q2": 2.0, "q3": "a", "q4": 5.0}

CORRUPT_BLOBS_SQL = "UPDATE checkpoint_blobs SET blob = '\\xc1c1c1'::bytea WHERE thread_id = %s"
CORRUPT_WRITES_SQL = "UPDATE checkpoint_writes SET blob = '\\xc1c1c1'::bytea WHERE thread_id = %s"
DELETE_CHECKPOINTS_SQL = [
    "DELETE FROM checkpoint_writes WHERE thread_id = %s",
    "DELETE FROM checkpoint_blobs WHERE thread_id = %s",
    "DELETE FROM checkpoints WHERE thread_id = %s",
]


def crash_after(k: int, before_crash=None):
    """Hook: on attempt 1, let k questions through, then (optionally tamper and) crash."""
    seen: list[str] = []

    async def hook(call: GradeCall) -> None:
        if call.attempt != 1:
            return
        if len(seen) == k:
            if before_crash is not None:
                await before_crash(call.thread_id)
            raise RuntimeError("injected crash of attempt 1")
        seen.append(call.question_id)

    return hook


async def _run(temporal_client, pools, saver, settings, task_queue, s, hook):
    async with grading_workers(temporal_client, pools, saver, settings, task_queue, grade_hook=hook) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog, agent_max_concurrency=1, heartbeat_timeout_s=5),
            id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput)
        out = await handle.result()
        view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
    return out, view


@st.composite
def crash_plans(draw):
    """A generated exam, its answers, and how many questions attempt 1 grades before it crashes."""
    questions, answers = draw(exams(min_questions=1, max_questions=4))
    return questions, answers, draw(st.integers(0, len(questions) - 1))


async def _damage(pg_admin_url: str, damage: str, thread_id: str) -> None:
    await asyncio.sleep(0.5)  # let the finished questions' checkpoint writes land first
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        if damage == "corrupt":
            await conn.execute(CORRUPT_BLOBS_SQL, (thread_id,))
            await conn.execute(CORRUPT_WRITES_SQL, (thread_id,))
        elif damage == "missing":
            for sql in DELETE_CHECKPOINTS_SQL:
                await conn.execute(sql, (thread_id,))


@settings(max_examples=4)
@example(plan=(QUESTIONS, ANSWERS, 2), damage="none")
@example(plan=(QUESTIONS, ANSWERS, 2), damage="corrupt")
@example(plan=(QUESTIONS, ANSWERS, 2), damage="missing")
@given(plan=crash_plans(), damage=st.sampled_from(["none", "missing", "corrupt"]))
async def test_property3_retry_resumes_from_valid_checkpoint_else_restarts_cleanly(
        temporal_client, pools, saver, gf_settings, pg_admin_url, task_queue, tenant_id, plan, damage):
    questions, answers, crash_at = plan
    s = await seed(pools, tenant_id, questions, answers)
    tamper = None if damage == "none" else (lambda thread_id: _damage(pg_admin_url, damage, thread_id))
    out, view = await _run(temporal_client, pools, saver, gf_settings, task_queue, s, crash_after(crash_at, tamper))
    # Whatever happened to attempt 1's checkpoint, the result is that of an undisturbed run.
    assert out.status == "completed" and out.total == expected_total(questions, answers)
    assert view.details["attempt"] == 2
    calls = await grader_calls(pools, s)
    if damage == "none":  # resumed: nothing graded in attempt 1 is graded again
        assert view.details["resumed"] is True
        assert view.details["resume_reason"].startswith("resumed from checkpoint")
        assert calls == {q.id: 1 for q in questions}
    else:  # a clean restart regrades everything
        assert view.details["resumed"] is False
        assert set(calls) == {q.id for q in questions}
        assert sum(calls.values()) == crash_at + len(questions)
        if damage == "corrupt":
            assert view.details["resume_reason"].startswith("corrupt checkpoint")
            assert view.details["thread_id"].endswith(":fresh-2")
        else:
            assert view.details["resume_reason"] == "no checkpoint"
            assert ":fresh-" not in view.details["thread_id"]


@settings(max_examples=4)
@given(exam=exams(min_questions=1, max_questions=4), concurrency=st.sampled_from([1, 2, None]),
       backoff=st.floats(0.001, 0.05), agent_max_attempts=st.integers(2, 4))
async def test_property18_failing_checkpoint_writes_mark_needs_intervention(
        temporal_client, pools, gf_settings, pg_url, task_queue, tenant_id, exam, concurrency, backoff,
        agent_max_attempts):
    questions, answers = exam
    # A real PostgreSQL refusal: every write on this pool fails (read-only transactions).
    kwargs = {**POOL_KWARGS, "options": "-c default_transaction_read_only=on"}
    pool = AsyncConnectionPool(pg_url, min_size=1, max_size=2, kwargs=kwargs, open=False)
    await pool.open()
    s = await seed(pools, tenant_id, questions, answers)
    try:
        async with open_saver(pool, backoff_seconds=backoff) as ro_saver:
            async with grading_workers(temporal_client, pools, ro_saver, gf_settings, task_queue) as cog:
                handle = await temporal_client.start_workflow(
                    "GradingWorkflow", s.grading_input(cog, agent_max_concurrency=concurrency,
                                                       agent_max_attempts=agent_max_attempts),
                    id=f"grade-{s.submission_id}", task_queue=task_queue)
                with pytest.raises(WorkflowFailureError) as failure:
                    await handle.result()
                history = await handle.fetch_history()
    finally:
        await pool.close()
    assert "CheckpointWriteError" in str(failure.value.cause)
    row = await submission(pools, s)
    assert row["status"] == "needs_intervention"
    assert "CheckpointWriteError" in row["error"] and "after 3 attempts" in row["error"]
    agent_attempts = [e.activity_task_started_event_attributes.attempt for e in history.events
                      if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled.count("run_grading_agent") == 1 and max(agent_attempts) == 1  # not retried
    assert scheduled[-1] == "mark_needs_intervention"
