# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Kill -9 a real cognitive worker mid-grading, twice, with several gradings in flight.

The cognitive worker runs as a subprocess (``python worker.py --queue cognitive``) with the demo
setting ``GRADEFLOW_DEMO_GRADER_DELAY_SECONDS`` so grading is slow enough to be interrupted. Questions
graded before a kill are not graded again (only those in flight at the kill may be), the crashes do not
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
from tests.e2e.processes import stop, tail
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
    env = {**services.env(), "GRADEFLOW_DEMO_GRADER_DELAY_SECONDS": "0.8", "GRADEFLOW_SHUTDOWN_TIMEOUT": "5",
           "GRADEFLOW_TEST_GRADER_LOG": str(_grader_log(log))}
    return subprocess.Popen(
        [sys.executable, "worker.py", "--queue", "cognitive", "--task-queue", cognitive_queue],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _grader_log(log: Path) -> Path:
    """Every grader call of the killed workers, one line each, written the moment its grade came back."""
    return log.with_name("grader-calls.log")


def _read_calls(path: Path, submission_id: str) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(qid, int(attempt)) for sid, qid, attempt, *_ in lines if sid == submission_id]


async def _calls(log: Path, s) -> list[tuple[str, int]]:
    """Grader calls of a submission (re-grades included: a grade lost with a killed worker counts too)."""
    return _read_calls(_grader_log(log), s.submission_id)


async def _recorded(pools, s) -> list[tuple[str, int]]:
    """``grader_calls`` rows: written with each grade's checkpoint, so once per question in the end."""
    return [(r["question_id"], r["attempt"]) for r in await fetch_all(pools, s.tenant_id, CALLS_SQL,
                                                                        (s.submission_id,))]


async def _wait_for(pools, subs, predicate, worker, log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        calls = [await _calls(log, s) for s in subs]
        if all(predicate(c) for c in calls):
            return
        assert worker.poll() is None, tail(log)
        assert time.monotonic() < deadline, f"{what}: {calls}"
        await asyncio.sleep(0.05)


async def _checkpointed(saver, thread_id: str) -> set[str]:
    """Questions whose grade is in the thread's latest checkpoint (state or pending writes)."""
    tup = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    if tup is None:
        return set()
    done = set(tup.checkpoint["channel_values"].get("grades") or {})
    for _task, channel, value in tup.pending_writes or []:
        if channel == "grades" and isinstance(value, dict):
            done |= set(value)
    return done


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
    in_flight_at_kill: list[list[set[str]]] = []  # per kill, per submission: graded, not in the checkpoint
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
                runs = [(await h.describe()).run_id for h in handles]
                in_flight_at_kill.append([{q for q, _ in await _calls(log, s)} - await _checkpointed(saver, run)
                                          for s, run in zip(killed, runs, strict=True)])
                # with agent_max_concurrency=1: the question being completed, and at most one whose
                # checkpoint write was still on its way when the kill landed
                assert all(len(f) <= 2 for f in in_flight_at_kill[-1]), in_flight_at_kill
                workers.append(_start_worker(services, cog, log))
            outs = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)
            views = [await h.query(QUERY_PROGRESS, result_type=ProgressView) for h in handles]
            workers[-1].send_signal(signal.SIGTERM)  # graceful shutdown within the shutdown timeout
            assert await asyncio.to_thread(workers[-1].wait, 20) == 0, log.read_text()[-3000:]
    finally:
        for proc in workers:
            stop(proc)

    for i, s in enumerate(killed):
        calls = await _calls(log, s)
        assert sorted(q for q, _ in await _recorded(pools, s)) == sorted(q.id for q in QUESTIONS)
        per_question = {q.id: sum(1 for qid, _ in calls if qid == q.id) for q in QUESTIONS}
        assert min(per_question.values()) == 1, (s.submission_id, calls)
        regraded = {qid for qid, n in per_question.items() if n > 1}
        # A question is graded again only if it was in flight at a kill: graded (its call logged)
        # but not yet in the checkpoint read right after the kill.
        in_flight = set().union(*(kill[i] for kill in in_flight_at_kill))
        assert regraded <= in_flight, (s.submission_id, calls, in_flight_at_kill)
        assert sum(per_question.values()) - len(QUESTIONS) <= sum(len(kill[i]) for kill in in_flight_at_kill), calls
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
