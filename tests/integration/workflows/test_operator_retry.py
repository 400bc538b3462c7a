"""An operator's retry of a needs_intervention submission resumes from the previous run's checkpoint.

Also: outages raised by the agent are retried without spending the grading's error budget.
"""

from __future__ import annotations

import psycopg
import pytest
from temporalio.client import WorkflowFailureError

from activities.agent import GradeCall
from infra.constants import QUERY_PROGRESS
from infra.stores.interventions import NotRetryableError, SubmissionNotFoundError
from infra.temporal.retry import retry_submission
from tests.integration.workflows.harness import (
    choice,
    expected_total,
    fetch_all,
    grader_calls,
    grading_workers,
    numeric,
    seed,
    submission,
)
from workflows.grading import GradingOutput, ProgressView

QUESTIONS = [choice("q1"), numeric("q2"), choice("q3", "b"), numeric("q4", 5.0), choice("q5", "c")]
ANSWERS = {"q1": "a", "q2": 2.0, "q3": "a", "q4": 5.0, "q5": "c"}
AUDIT_SQL = "SELECT actor_id, action, reason, before FROM review_log WHERE submission_id = %s"
RETRIED_SQL = ("SELECT count(*) AS n FROM event_outbox WHERE target_id = %s AND event_type = 'submission.retried'")


class BrokenGrader:
    """Lets ``good`` questions through, then fails every grading until it is repaired."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.passed: list[str] = []
        self.broken = True

    async def __call__(self, call: GradeCall) -> None:
        if not self.broken or call.question_id in self.passed:
            return
        if len(self.passed) >= self.good:
            raise RuntimeError("grader bug")
        self.passed.append(call.question_id)


async def test_operator_retry_resumes_from_the_previous_runs_checkpoint(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id):
    s = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    grader = BrokenGrader(good=2)
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, grade_hook=grader) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog, agent_max_concurrency=1, agent_max_attempts=2,
                                               retry_max_interval_s=1),
            id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        first_run = (await handle.describe()).run_id
        failed = await submission(pools, s)
        assert failed["status"] == "needs_intervention" and "GradingError" in failed["error"]
        assert await grader_calls(pools, s) == {q: 1 for q in grader.passed}  # the 2nd run resumed too

        grader.broken = False
        started = await retry_submission(pools, temporal_client, tenant_id=tenant_id,
                                         submission_id=s.submission_id.upper(), actor_id="ops-1",
                                         reason="grader fixed", task_queue=task_queue, cognitive_queue=cog,
                                         agent_max_concurrency=1)
        assert started.previous_run_id == first_run and started.run_id != first_run
        assert started.resume_thread_id == first_run
        retried = temporal_client.get_workflow_handle(started.workflow_id, run_id=started.run_id,
                                                       result_type=GradingOutput)
        out = await retried.result()
        view = await retried.query(QUERY_PROGRESS, result_type=ProgressView)

    assert out.status == "completed" and out.total == expected_total(QUESTIONS, ANSWERS)
    assert view.details["resumed"] is True and view.details["thread_id"] == first_run
    # Questions graded by the first run are not graded again.
    assert await grader_calls(pools, s) == {q.id: 1 for q in QUESTIONS}
    audit = await fetch_all(pools, tenant_id, AUDIT_SQL, (s.submission_id,))
    assert [(a["actor_id"], a["action"], a["reason"]) for a in audit] == [("ops-1", "retry_requested", "grader fixed")]
    assert audit[0]["before"]["run_id"] == first_run and "GradingError" in audit[0]["before"]["error"]
    assert (await fetch_all(pools, tenant_id, RETRIED_SQL, (s.submission_id,)))[0]["n"] == 1

    with pytest.raises(NotRetryableError):  # completed now: nothing to retry, nothing audited
        await retry_submission(pools, temporal_client, tenant_id=tenant_id, submission_id=s.submission_id,
                               actor_id="ops-1", reason="again", task_queue=task_queue)
    with pytest.raises(SubmissionNotFoundError):  # another tenant's submission is not found
        await retry_submission(pools, temporal_client, tenant_id=f"{tenant_id}-other",
                               submission_id=s.submission_id, actor_id="ops-1", reason="x", task_queue=task_queue)
    assert len(await fetch_all(pools, tenant_id, AUDIT_SQL, (s.submission_id,))) == 1


async def test_outages_do_not_spend_the_grading_error_budget(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id):
    s = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    outages = 3

    async def flaky_database(call: GradeCall) -> None:
        if call.attempt <= outages:
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue,
                               grade_hook=flaky_database) as cog:
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", s.grading_input(cog, agent_max_attempts=1, retry_max_interval_s=0.2),
            id=f"grade-{s.submission_id}", task_queue=task_queue, result_type=GradingOutput)
        out = await handle.result()
        view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
    assert out.status == "completed" and out.total == expected_total(QUESTIONS, ANSWERS)
    assert view.details["attempt"] == outages + 1
    assert (await submission(pools, s))["status"] == "completed"
