"""Orchestration activities against real PostgreSQL and Redis (no Temporal server needed)."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.grading import GradingActivities
from activities.types import PersistInput, StatusInput, SubmissionRef
from infra.cache import keys
from tests.integration.workflows.harness import choice, numeric, seed, seed_exam, seed_submission, submission


@pytest.fixture
def acts(pools, gf_settings) -> GradingActivities:
    return GradingActivities(pools, gf_settings)


async def test_load_grading_context_sets_grading_and_returns_small_metadata(acts, pools, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1"), numeric("q2")], {"q1": "a"})
    env = ActivityEnvironment()
    meta = await env.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id, s.trace_id))
    assert (meta.exam_id, meta.questions_total, meta.max_total, meta.status) == (s.exam_id, 2, 5.0, "grading")
    assert (await submission(pools, s))["status"] == "grading"
    again = await env.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id))  # idempotent
    assert again.status == "grading"


async def test_load_grading_context_refuses_missing_submission_and_empty_exam(acts, pools, tenant_id):
    env = ActivityEnvironment()
    s = await seed(pools, tenant_id, [choice("q1")], {})
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.load_grading_context, SubmissionRef("00000000-0000-0000-0000-000000000000", tenant_id))
    assert err.value.type == "SubmissionNotFound" and err.value.non_retryable
    with pytest.raises(ApplicationError) as err:  # another tenant cannot see it (RLS)
        await env.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id + "-other"))
    assert err.value.type == "SubmissionNotFound"
    empty = await seed_submission(pools, tenant_id, await seed_exam(pools, tenant_id, []), {})
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.load_grading_context, SubmissionRef(empty.submission_id, tenant_id))
    assert err.value.type == "NoQuestions"


async def test_mark_needs_intervention_records_error_and_spares_final_states(acts, pools, tenant_id):
    env = ActivityEnvironment()
    s = await seed(pools, tenant_id, [choice("q1")], {})
    await env.run(acts.set_status, StatusInput(s.submission_id, tenant_id, "grading"))
    out = await env.run(acts.mark_needs_intervention, StatusInput(s.submission_id, tenant_id, error="boom"))
    assert out.changed and out.status == "needs_intervention"
    row = await submission(pools, s)
    assert row["status"] == "needs_intervention" and row["error"] == "boom"

    done = await seed(pools, tenant_id, [choice("q1")], {})
    await env.run(acts.set_status, StatusInput(done.submission_id, tenant_id, "grading"))
    await env.run(acts.set_status, StatusInput(done.submission_id, tenant_id, "completed"))
    out = await env.run(acts.mark_needs_intervention, StatusInput(done.submission_id, tenant_id, error="late"))
    assert not out.changed and (await submission(pools, done))["status"] == "completed"


async def test_set_status_refuses_invalid_transition(acts, pools, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {})
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.set_status, StatusInput(s.submission_id, tenant_id, "completed"))
    assert err.value.type == "InvalidTransition" and err.value.non_retryable
    assert (await submission(pools, s))["status"] == "queued"


async def test_persist_publishes_a_live_status_notification(acts, pools, tenant_id):
    s = await seed(pools, tenant_id, [choice("q1")], {})
    env = ActivityEnvironment()
    await env.run(acts.set_status, StatusInput(s.submission_id, tenant_id, "grading"))
    pubsub = pools.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(tenant_id))
    try:
        grade = {"question_id": "q1", "score": 2.0, "max_points": 2.0, "confidence": 1.0, "grader": "choice"}
        await env.run(acts.persist_grading_result, PersistInput(s.submission_id, tenant_id, [grade], 2.0, 2.0))
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
            await asyncio.sleep(0.02)
    finally:
        await pubsub.aclose()
    assert message is not None
    body = json.loads(message["data"])
    assert body["type"] == "submission.status_changed" and body["submission_id"] == s.submission_id
    assert body["data"]["status"] == "completed" and body["tenant_id"] == tenant_id
