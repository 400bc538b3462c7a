"""One writer per submission: the version fence refuses stale writes; the lock serialises; Redis down degrades.

Activities run in an ``ActivityEnvironment`` against the real PostgreSQL and Redis of the session
(or a pool manager whose Redis is a closed port).
"""

from __future__ import annotations

import dataclasses

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.grading import VERSION_CONFLICT, GradingActivities
from activities.types import PersistInput, StatusInput, SubmissionRef
from infra.cache.keys import submission_lock_name
from infra.stores.locks import RedisLock
from infra.stores.writer import SubmissionBusyError
from tests.integration.workflows.harness import choice, fetch_all, fetch_one, seed

HISTORY_SQL = "SELECT question_id, old_score, new_score, source FROM score_history WHERE submission_id = %s ORDER BY id"
RESULTS_SQL = "SELECT question_id, score FROM grading_results WHERE submission_id = %s ORDER BY question_id"


def _grades(**scores: float) -> list[dict]:
    return [{"question_id": q, "score": s, "max_points": 2.0, "confidence": 0.9, "feedback": "", "grader": "choice",
             "rubric_version": 1, "flagged": False} for q, s in scores.items()]


def _persist(s, version: int, **scores: float) -> PersistInput:
    return PersistInput(s.submission_id, s.tenant_id, _grades(**scores), sum(scores.values()), 4.0,
                        expected_version=version)


def _env(run_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="grade-test", workflow_run_id=run_id)
    return env


async def test_a_stale_persist_is_refused_and_writes_nothing(pools, gf_settings, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1"), choice("q2")], {})
    acts = GradingActivities(pools, gf_settings)
    run = _env("run-1")
    meta = await run.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id))
    row = await fetch_one(pools, tenant_id, "SELECT version FROM submissions WHERE id = %s", (s.submission_id,))
    assert row is not None and meta.version == row["version"]

    with pytest.raises(ApplicationError) as stale:
        await run.run(acts.persist_grading_result, _persist(s, meta.version - 1, q1=2.0, q2=0.0))
    assert stale.value.type == VERSION_CONFLICT and stale.value.non_retryable
    assert await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,)) == []
    assert await fetch_all(pools, tenant_id, HISTORY_SQL, (s.submission_id,)) == []

    done = await run.run(acts.persist_grading_result, _persist(s, meta.version, q1=2.0, q2=0.0))
    assert done.status == "completed" and done.version == meta.version + 1
    again = await run.run(acts.persist_grading_result, _persist(s, meta.version, q1=2.0, q2=0.0))
    assert (again.status, again.version) == (done.status, done.version)  # a re-run of the same run: its own commit

    # A stale holder (another run that read the version before this commit) cannot overwrite it.
    with pytest.raises(ApplicationError) as zombie:
        await _env("run-0").run(acts.persist_grading_result, _persist(s, meta.version, q1=0.0, q2=2.0))
    assert zombie.value.type == VERSION_CONFLICT
    rows = await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,))
    assert [(r["question_id"], float(r["score"])) for r in rows] == [("q1", 2.0), ("q2", 0.0)]
    history = await fetch_all(pools, tenant_id, HISTORY_SQL, (s.submission_id,))
    assert [(h["question_id"], h["old_score"], float(h["new_score"]), h["source"]) for h in history] == \
        [("q1", None, 2.0, "agent"), ("q2", None, 0.0, "agent")]


async def test_a_held_lock_makes_the_write_fail_retryably(pools, gf_settings, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {})
    acts = GradingActivities(pools, gf_settings.model_copy(update={"submission_lock_wait": 0.3}))
    run = _env("run-1")
    meta = await run.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id))
    other = RedisLock(pools.redis, submission_lock_name(s.submission_id), ttl=30, owner="someone-else")
    assert await other.acquire()
    try:
        with pytest.raises(SubmissionBusyError):  # not an ApplicationError: Temporal retries it
            await run.run(acts.persist_grading_result, _persist(s, meta.version, q1=1.0))
        assert await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,)) == []
        assert await other.owned()
    finally:
        await other.release()
    done = await run.run(acts.persist_grading_result, _persist(s, meta.version, q1=1.0))
    assert done.status == "completed"
    assert not await pools.redis.exists(RedisLock(pools.redis, submission_lock_name(s.submission_id), ttl=1).key)


async def test_redis_down_grading_goes_on_and_the_fence_still_holds(pools, redis_down_pools, gf_settings, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {})
    acts = GradingActivities(redis_down_pools, gf_settings.model_copy(update={"submission_lock_outage": 0.2}))
    run = _env("run-1")
    meta = await run.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id))
    with pytest.raises(ApplicationError) as stale:
        await run.run(acts.persist_grading_result, _persist(s, meta.version + 1, q1=1.0))
    assert stale.value.type == VERSION_CONFLICT
    done = await run.run(acts.persist_grading_result, _persist(s, meta.version, q1=1.0))
    assert done.status == "completed"
    assert [float(r["score"]) for r in await fetch_all(pools, tenant_id, RESULTS_SQL, (s.submission_id,))] == [1.0]


async def test_reviewer_scores_applied_by_the_workflow_are_fenced_and_in_the_history(pools, gf_settings, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1"), choice("q2")], {})
    acts = GradingActivities(pools, gf_settings)
    run = _env("run-1")
    meta = await run.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id))
    inp = _persist(s, meta.version, q1=2.0, q2=0.0)
    inp.flagged = ["q2"]
    persisted = await run.run(acts.persist_grading_result, inp)
    assert persisted.status == "needs_review"

    review = StatusInput(s.submission_id, tenant_id, "completed", actor_id="teacher-9", overrides={"q2": 1.5},
                         expected_version=persisted.version - 1)
    with pytest.raises(ApplicationError) as stale:
        await run.run(acts.set_status, review)
    assert stale.value.type == VERSION_CONFLICT
    review.expected_version = persisted.version
    out = await run.run(acts.set_status, review)
    assert (out.status, out.total) == ("completed", 3.5)
    again = await run.run(acts.set_status, review)  # a retry after a lost reply finds its own commit
    assert (again.status, again.total) == ("completed", 3.5)
    history = await fetch_all(pools, tenant_id, HISTORY_SQL, (s.submission_id,))
    assert [(h["question_id"], None if h["old_score"] is None else float(h["old_score"]), float(h["new_score"]),
             h["source"]) for h in history] == \
        [("q1", None, 2.0, "agent"), ("q2", None, 0.0, "agent"), ("q2", 0.0, 1.5, "review")]
