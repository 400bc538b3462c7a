# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Kill -9 a real cognitive worker mid-grading; a new worker resumes from the checkpoint.

The cognitive worker runs as a subprocess (``python worker.py --queue cognitive``) with the test
hook ``GRADEFLOW_TEST_GRADE_DELAY`` so grading is slow enough to be interrupted. Questions graded
before the kill are not graded again (only the one in flight may be), and the result equals an
uninterrupted run of the same answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.constants import QUERY_PROGRESS
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    choice,
    fetch_all,
    gf_settings,
    grading_workers,
    numeric,
    saver,
    seed_exam,
    seed_submission,
    submission,
)
from workflows.grading import GradingOutput, ProgressView

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = [choice("q1"), numeric("q2"), choice("q3", "b"), numeric("q4", 5.0), choice("q5", "c")]
ANSWERS = {"q1": "a", "q2": 2.0, "q3": "a", "q4": 4.0, "q5": "c"}
CALLS_SQL = "SELECT question_id, attempt FROM grader_calls WHERE submission_id = %s ORDER BY id"
RESULTS_SQL = ("SELECT question_id, score, max_points, confidence, grader FROM grading_results "
               "WHERE submission_id = %s ORDER BY question_id")


def _start_worker(services, cognitive_queue: str, log: Path) -> subprocess.Popen:
    env = {**services.env(), "GRADEFLOW_TEST_GRADE_DELAY": "0.8", "GRADEFLOW_SHUTDOWN_TIMEOUT": "5"}
    return subprocess.Popen(
        [sys.executable, "worker.py", "--queue", "cognitive", "--task-queue", cognitive_queue],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


async def _calls(pools, s) -> list[tuple[str, int]]:
    return [(r["question_id"], r["attempt"]) for r in await fetch_all(pools, s.tenant_id, CALLS_SQL,
                                                                        (s.submission_id,))]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_killed_cognitive_worker_resumes_without_regrading(
        services, temporal_client, pools, saver, gf_settings, task_queue, tenant_id, tmp_path):
    exam_id = await seed_exam(pools, tenant_id, QUESTIONS)
    killed = await seed_submission(pools, tenant_id, exam_id, ANSWERS)
    reference = await seed_submission(pools, tenant_id, exam_id, ANSWERS)
    cog = f"{task_queue}-cog"
    log = tmp_path / "worker.log"
    first = _start_worker(services, cog, log)
    second = None
    try:
        async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, cognitive=False):
            handle = await temporal_client.start_workflow(
                "GradingWorkflow", killed.grading_input(cog, agent_max_concurrency=1, heartbeat_timeout_s=3),
                id=f"grade-{killed.submission_id}", task_queue=task_queue, result_type=GradingOutput)
            deadline = time.monotonic() + 60
            while len(await _calls(pools, killed)) < 2:  # >= 2, so one is certainly checkpointed
                assert first.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the first worker did not grade 2 questions"
                await asyncio.sleep(0.05)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            before_kill = await _calls(pools, killed)
            assert len(before_kill) < len(QUESTIONS), "the first worker finished before the kill"

            second = _start_worker(services, cog, log)
            out = await asyncio.wait_for(handle.result(), 90)
            view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
            second.send_signal(signal.SIGTERM)  # graceful shutdown within the shutdown timeout
            assert await asyncio.to_thread(second.wait, 20) == 0, log.read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None:
                _stop(proc)

    calls = await _calls(pools, killed)
    per_question = {q.id: sum(1 for qid, _ in calls if qid == q.id) for q in QUESTIONS}
    graded_before = [qid for qid, _ in before_kill]
    # Everything recorded before the kill except possibly the last one (in flight between its
    # grader_calls row and its checkpoint write) is never graded again.
    for qid in graded_before[:-1]:
        assert per_question[qid] == 1, (qid, calls)
    assert sum(per_question.values()) <= len(QUESTIONS) + 1 and min(per_question.values()) == 1, calls
    assert max(attempt for _, attempt in calls) >= 2
    assert view.details["resumed"] is True and view.details["attempt"] >= 2

    # The same answers graded without interruption give the same result.
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as in_proc_cog:
        ref_out = await temporal_client.execute_workflow(
            "GradingWorkflow", reference.grading_input(in_proc_cog), id=f"grade-{reference.submission_id}",
            task_queue=task_queue, result_type=GradingOutput)
    assert (out.status, out.total, out.max_total, out.flagged) == (
        ref_out.status, ref_out.total, ref_out.max_total, ref_out.flagged)
    rows = await fetch_all(pools, tenant_id, RESULTS_SQL, (killed.submission_id,))
    ref_rows = await fetch_all(pools, tenant_id, RESULTS_SQL, (reference.submission_id,))
    assert rows == ref_rows and len(ref_rows) == len(QUESTIONS)
    assert (await submission(pools, killed)) == (await submission(pools, reference))
