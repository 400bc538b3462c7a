# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Kill -9 a real cognitive worker mid-grading, twice, with several gradings in flight.

The cognitive worker runs as a subprocess (``python worker.py --queue cognitive``) with the test
hook ``GRADEFLOW_TEST_GRADE_DELAY`` so grading is slow enough to be interrupted. Questions graded
before a kill are not graded again (only those in flight at the kill may be), the crashes do not
spend the grading's error budget, and every result equals an uninterrupted run of the same answers.
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
QUESTIONS = [choice("q1"), numeric("q2"), choice("q3", "b"), numeric("q4", 5.0), choice("q5", "c"),
             numeric("q6", 1.0), choice("q7", "a")]
ANSWERS = {"q1": "a", "q2": 2.0, "q3": "a", "q4": 4.0, "q5": "c", "q6": 1.0, "q7": "b"}
IN_FLIGHT = 3
"""Gradings in flight at once in the killed worker."""
KILL_AFTER = (2, 4)
"""Kill the worker once every grading has recorded this many questions (two kills)."""
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


async def _wait_for(pools, subs, predicate, worker, log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        calls = [await _calls(pools, s) for s in subs]
        if all(predicate(c) for c in calls):
            return
        assert worker.poll() is None, _tail(log)
        assert time.monotonic() < deadline, f"{what}: {calls}"
        await asyncio.sleep(0.05)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


async def test_killed_cognitive_worker_resumes_without_regrading(
        services, temporal_client, pools, saver, gf_settings, task_queue, tenant_id, tmp_path):
    """Several gradings in flight, the cognitive worker SIGKILLed twice: only what was in flight is re-graded.

    ``agent_max_attempts=1``: the crashes (heartbeat timeouts) must not spend the grading's error budget.
    """
    exam_id = await seed_exam(pools, tenant_id, QUESTIONS)
    killed = [await seed_submission(pools, tenant_id, exam_id, ANSWERS) for _ in range(IN_FLIGHT)]
    reference = await seed_submission(pools, tenant_id, exam_id, ANSWERS)
    cog = f"{task_queue}-cog"
    log = tmp_path / "worker.log"
    workers = [_start_worker(services, cog, log)]
    recorded_before_kill: list[list[list[str]]] = []  # per kill, per submission: questions recorded
    try:
        async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, cognitive=False):
            handles = [await temporal_client.start_workflow(
                "GradingWorkflow", s.grading_input(cog, agent_max_concurrency=1, heartbeat_timeout_s=3,
                                                   agent_max_attempts=1, retry_max_interval_s=1),
                id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput) for s in killed]
            for kill, at_least in enumerate(KILL_AFTER):
                await _wait_for(pools, killed, lambda c, n=at_least: len({q for q, _ in c}) >= n, workers[-1], log,
                                f"kill {kill + 1}: not every grading recorded {at_least} questions")
                _kill(workers[-1])
                recorded_before_kill.append([[q for q, _ in await _calls(pools, s)] for s in killed])
                assert all(len(set(r)) < len(QUESTIONS) for r in recorded_before_kill[-1]), "finished before kill"
                workers.append(_start_worker(services, cog, log))
            outs = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            views = [await h.query(QUERY_PROGRESS, result_type=ProgressView) for h in handles]
            workers[-1].send_signal(signal.SIGTERM)  # graceful shutdown within the shutdown timeout
            assert await asyncio.to_thread(workers[-1].wait, 20) == 0, log.read_text()[-3000:]
    finally:
        for proc in workers:
            _stop(proc)

    for i, s in enumerate(killed):
        calls = await _calls(pools, s)
        per_question = {q.id: sum(1 for qid, _ in calls if qid == q.id) for q in QUESTIONS}
        assert min(per_question.values()) == 1, (s.submission_id, calls)
        regraded = {qid for qid, n in per_question.items() if n > 1}
        # A question is re-graded only if it was in flight at a kill: recorded (graded) but its
        # checkpoint write not yet done, i.e. the last one recorded before that kill; with
        # agent_max_concurrency=1 at most one per submission per kill.
        in_flight = {before[i][-1] for before in recorded_before_kill if before[i]}
        assert regraded <= in_flight, (s.submission_id, calls, recorded_before_kill)
        assert sum(per_question.values()) - len(QUESTIONS) <= len(KILL_AFTER), calls
        assert max(attempt for _, attempt in calls) >= 2
        assert views[i].details["resumed"] is True and views[i].details["attempt"] >= 2
        assert outs[i].status == "completed"

    # The same answers graded without interruption give the same result.
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as in_proc_cog:
        ref_out = await temporal_client.execute_workflow(
            "GradingWorkflow", reference.grading_input(in_proc_cog), id=f"grade-{reference.submission_id}",
            task_queue=task_queue, result_type=GradingOutput)
    ref_rows = await fetch_all(pools, tenant_id, RESULTS_SQL, (reference.submission_id,))
    assert len(ref_rows) == len(QUESTIONS)
    for out, s in zip(outs, killed, strict=True):
        assert (out.status, out.total, out.max_total, out.flagged) == (
            ref_out.status, ref_out.total, ref_out.max_total, ref_out.flagged)
        assert await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,)) == ref_rows
        assert (await submission(pools, s)) == (await submission(pools, reference))
