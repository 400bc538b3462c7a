"""PostgreSQL first: Redis being down never decides whether a grading's truth is stored.

The activities here run on a pool manager whose Redis is a closed port (an outage); the copy that
the outage left stale in the real Redis is repaired by the relay's handler once Redis answers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from activities.grading import GradingActivities
from activities.types import PersistInput, StatusInput
from infra.cache import keys
from infra.cache.copies import Cache
from infra.events.outbox import EventEnvelope
from infra.stores.submissions import copy_repair_handler, load_submission
from tests.integration.workflows.harness import choice, fetch_all, seed, submission

EVENTS_SQL = ("SELECT event_id, version, payload FROM event_outbox WHERE target_id = %s "
              "AND event_type = 'submission.graded'")


def _grade(qid: str, score: float) -> dict:
    return {"question_id": qid, "score": score, "max_points": 2.0, "confidence": 0.9, "feedback": "",
            "criteria_met": [], "criteria_missed": [], "grader": "choice", "rubric_version": 1, "flagged": False}


async def test_persist_commits_the_truth_with_redis_down_and_the_relay_repairs_the_copy(
        pools, redis_down_pools, gf_settings, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1"), choice("q2")], {})
    env = ActivityEnvironment()
    await env.run(GradingActivities(pools, gf_settings).set_status,
                  StatusInput(s.submission_id, tenant_id, "grading"))
    key = keys.submission_key(tenant_id, s.submission_id)
    stale = await load_submission(pools, tenant_id, s.submission_id)  # the hot copy while grading
    await pools.redis.set(key, json.dumps(stale))

    inp = PersistInput(s.submission_id, tenant_id, [_grade("q1", 2.0), _grade("q2", 0.0)], total=2.0,
                       max_total=4.0, trace_id=s.trace_id)
    acts = GradingActivities(redis_down_pools, gf_settings)
    out = await env.run(acts.persist_grading_result, inp)
    again = await env.run(acts.persist_grading_result, inp)  # a retry after a lost reply

    assert out.status == again.status == "completed" and again.version == out.version
    assert (await submission(pools, s))["status"] == "completed"
    events = await fetch_all(pools, tenant_id, EVENTS_SQL, (s.submission_id,))
    assert len(events) == 1 and events[0]["version"] == out.version  # one event id for the change
    assert json.loads(await pools.redis.get(key))["status"] == "grading"  # left stale by the outage

    # The relay publishes submission.graded once Redis answers; its handler drops the stale copy.
    repair = copy_repair_handler(Cache(pools.redis, ttl_seconds=60))
    event = EventEnvelope(event_id=str(events[0]["event_id"]), event_type="submission.graded",
                          tenant_id=tenant_id, actor_id=None, target_type="submission",
                          target_id=s.submission_id, version=events[0]["version"], occurred_at=datetime.now(UTC),
                          payload=events[0]["payload"])
    await repair(event)
    assert await pools.redis.get(key) is None

    # A copy at the committed version (or newer) survives a repair of an older event.
    fresh = await load_submission(pools, tenant_id, s.submission_id)
    assert await Cache(pools.redis, ttl_seconds=60).set_if_newer(key, fresh)
    await repair(event)
    assert json.loads(await pools.redis.get(key))["status"] == "completed"
    # ... and an older copy never overwrites it.
    assert not await Cache(pools.redis, ttl_seconds=60).set_if_newer(key, stale)
    assert json.loads(await pools.redis.get(key))["status"] == "completed"


async def test_a_rerun_emits_the_same_event_id_and_a_new_change_a_new_one(pools, gf_settings, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {})
    env = ActivityEnvironment()
    acts = GradingActivities(pools, gf_settings)
    for _ in range(2):  # the second round is a new change (new version), each re-run within it is not
        await env.run(acts.set_status, StatusInput(s.submission_id, tenant_id, "grading"))
        for _ in range(2):
            await env.run(acts.mark_needs_intervention, StatusInput(s.submission_id, tenant_id, error="boom"))
    rows = await fetch_all(pools, tenant_id, "SELECT event_id, version FROM event_outbox WHERE target_id = %s "
                           "AND payload->>'status' = 'needs_intervention'", (s.submission_id,))
    assert len(rows) == 2 and len({r["version"] for r in rows}) == 2
