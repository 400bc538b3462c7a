"""Accepting a regrade request through the review saga: compensated → history reversed and request reopened.

Real PostgreSQL and Redis; failures are injected with the review-saga tests' ``FaultySteps``.
"""

from __future__ import annotations

import uuid

from infra.cache.copies import Cache
from infra.sagas.review import OverrideRequest, ReviewSaga, SagaStatus
from infra.stores import regrade_requests, review
from tests.property.test_review_saga import FaultySteps, completed_submission

HISTORY_SQL = ("SELECT question_id, old_score, new_score, source, reason FROM score_history "
               "WHERE submission_id = %s AND source <> 'agent' ORDER BY id")


async def _accept(pools, steps, tenant_id: str, sid: str, request_id: str, score: float):
    target = await review.load_target(pools, tenant_id, sid)
    assert target is not None
    return await ReviewSaga(pools, steps=steps).run(OverrideRequest(
        tenant_id, sid, "teacher", {"q2": (score, None)}, target.version, reason="accepted", source="request",
        request_id=request_id))


async def _history(pools, tenant_id: str, sid: str) -> list[tuple]:
    async with pools.transaction(tenant_id) as conn:
        rows = await (await conn.execute(HISTORY_SQL, (sid,))).fetchall()
    return [(r["question_id"], float(r["old_score"]), float(r["new_score"]), r["source"], r["reason"]) for r in rows]


async def test_a_compensated_accept_reopens_the_request_and_reverses_the_history(pools, tenant_id):
    sid = await completed_submission(pools, tenant_id)
    cache = Cache(pools.redis, ttl_seconds=60)
    req = await regrade_requests.create_request(pools, tenant_id, sid, question_id="q2", reason="7 is right",
                                                requested_by=f"lms-{uuid.uuid4().hex[:6]}", must_own=False)

    failed = await _accept(pools, FaultySteps(pools, cache, fail=("notify", "after")), tenant_id, sid, req["id"], 3.0)
    assert failed.status == SagaStatus.COMPENSATED
    reopened = await regrade_requests.load_request(pools, tenant_id, req["id"])
    assert reopened is not None and (reopened["status"], reopened["new_score"], reopened["saga_id"]) == \
        ("open", None, None)
    history = await _history(pools, tenant_id, sid)
    assert history[0] == ("q2", 0.0, 3.0, "request", "accepted")
    assert history[1][:4] == ("q2", 3.0, 0.0, "request") and f"saga {failed.saga_id} compensated" in history[1][4]
    assert len(history) == 2

    done = await _accept(pools, FaultySteps(pools, cache), tenant_id, sid, req["id"], 2.5)
    assert done.status == SagaStatus.COMPLETED
    accepted = await regrade_requests.load_request(pools, tenant_id, req["id"])
    assert accepted is not None and (accepted["status"], accepted["old_score"], accepted["new_score"],
                                     accepted["saga_id"]) == ("accepted", 0.0, 2.5, done.saga_id)
    assert (await _history(pools, tenant_id, sid))[2:] == [("q2", 0.0, 2.5, "request", "accepted")]

    again = await _accept(pools, FaultySteps(pools, cache), tenant_id, sid, req["id"], 1.0)
    assert again.status == SagaStatus.COMPENSATED and again.conflict  # no longer open: nothing written
    assert len(await _history(pools, tenant_id, sid)) == 3
