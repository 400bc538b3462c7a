# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Property 4: result rows, submission status and the outbox event commit together or not at all.

Failures are injected in the middle of ``persist_grading_result``'s transaction with real
PostgreSQL refusals: a result breaking the ``score <= max_points`` CHECK after other rows were
written, or a status transition the state-machine trigger rejects after every row was written.
The Redis hot copy is compensated back to what it was.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.grading import GradingActivities
from activities.types import PersistInput, StatusInput
from infra.cache import keys
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    choice,
    fetch_all,
    gf_settings,
    seed,
    submission,
)

RESULTS_SQL = "SELECT question_id, score FROM grading_results WHERE submission_id = %s"
GRADED_EVENTS_SQL = "SELECT count(*) AS n FROM event_outbox WHERE target_id = %s AND event_type = 'submission.graded'"


def _grade(qid: str, score: float, max_points: float = 2.0, confidence: float = 0.9) -> dict:
    return {"question_id": qid, "score": score, "max_points": max_points, "confidence": confidence,
            "feedback": "", "criteria_met": [], "criteria_missed": [], "grader": "choice",
            "rubric_version": 1, "flagged": False}


grades_st = st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=1, max_size=5)


@settings(max_examples=12)
@given(scores=grades_st, bad_at=st.integers(0, 4), failure=st.sampled_from(["check", "transition", "none"]),
       flagged=st.booleans(), prior_cache=st.none() | st.just({"status": "grading", "v": 0}))
async def test_property4_results_and_status_commit_together_or_not_at_all(
        pools, gf_settings, tenant_id, scores, bad_at, failure, flagged, prior_cache):
    n = len(scores)
    questions = [choice(f"q{i}") for i in range(n)]
    s = await seed(pools, tenant_id, questions, {})
    acts = GradingActivities(pools, gf_settings)
    env = ActivityEnvironment()
    if failure != "transition":  # queued -> completed is refused by the trigger
        await env.run(acts.set_status, StatusInput(s.submission_id, tenant_id, "grading"))
    grades = [_grade(f"q{i}", sc) for i, sc in enumerate(scores)]
    if failure == "check":
        grades[min(bad_at, n - 1)]["score"] = 3.0  # > max_points: CHECK violation mid-transaction
    key = keys.submission_key(tenant_id, s.submission_id)
    await pools.redis.delete(key)
    if prior_cache is not None:
        await pools.redis.set(key, json.dumps(prior_cache))
    before = await submission(pools, s)
    inp = PersistInput(s.submission_id, tenant_id, grades, total=sum(g["score"] for g in grades),
                       max_total=2.0 * n, flagged=["q0"] if flagged else [], trace_id=s.trace_id)

    if failure == "none":
        out = await env.run(acts.persist_grading_result, inp)
        expected = "needs_review" if flagged else "completed"
        assert out.status == expected
        row = await submission(pools, s)
        assert row["status"] == expected and float(row["total"]) == pytest.approx(inp.total)
        assert len(await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,))) == n
        assert (await fetch_all(pools, tenant_id, GRADED_EVENTS_SQL, (s.submission_id,)))[0]["n"] == 1
        assert json.loads(await pools.redis.get(key))["status"] == expected
        return

    with pytest.raises(ApplicationError) as err:
        await env.run(acts.persist_grading_result, inp)
    assert err.value.non_retryable and err.value.type == "InvalidResult"
    assert await submission(pools, s) == before  # status, total, error unchanged
    assert await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,)) == []
    assert (await fetch_all(pools, tenant_id, GRADED_EVENTS_SQL, (s.submission_id,)))[0]["n"] == 0
    cached = await pools.redis.get(key)
    assert (json.loads(cached) if cached else None) == prior_cache  # compensated
