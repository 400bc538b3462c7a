"""Review through the real API: the workflow update for needs_review, the saga for completed, bad input."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from infra.constants import QUERY_PROGRESS
from infra.stores import grading
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixture

PROBLEM = "application/problem+json"
MAX_POINTS = {"q1": 1.0, "q2": 2.0, "q3": 2.0, "q4": 5.0}
"""Max points of :func:`exam_body`'s questions."""
GRADED = {"q1": 1.0, "q2": 2.0, "q3": 1.0, "q4": 3.0}


async def complete_submission(pools: Any, tenant_id: str, submission_id: str,
                              grades: dict[str, tuple[float, float]]) -> None:
    """Give a queued submission results and the status ``completed`` (as the grading workflow would).

    Args:
        pools: pool manager.
        tenant_id: owning tenant.
        submission_id: a ``queued`` submission.
        grades: question_id -> (score, max_points).

    """
    rows = [{"question_id": q, "score": s, "max_points": m, "confidence": 0.9, "feedback": f"graded {q}",
             "grader": "test", "rubric_version": 1} for q, (s, m) in grades.items()]
    async with pools.transaction(tenant_id) as conn:
        await grading.set_status(conn, submission_id, "grading")
        await grading.save_results(conn, tenant_id=tenant_id, submission_id=submission_id, grades=rows,
                                         status="completed", total=sum(s for s, _ in grades.values()),
                                         max_total=sum(m for _, m in grades.values()))


async def _submit(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    exam = await client.post("/v1/exams", json=exam_body(), headers=headers)
    assert exam.status_code == 201, exam.text
    resp = await client.post("/v1/submissions", json={"exam_id": exam.json()["id"], "student_id": "s1",
                                                      "answers": GOOD_ANSWERS}, headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()["submission_id"]


async def _completed(client, headers, pools, tenant_id, temporal_client) -> str:
    sid = await _submit(client, headers)
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("graded by the test")
    await complete_submission(pools, tenant_id, sid, {q: (s, MAX_POINTS[q]) for q, s in GRADED.items()})
    return sid


async def _state(pg_admin_url: str, sid: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        out = {}
        for name, sql in {
            "submission": "SELECT status, total, version, updated_at FROM submissions WHERE id = %s",
            "results": "SELECT * FROM grading_results WHERE submission_id = %s ORDER BY question_id",
            "log": "SELECT action, question_id, actor_id, before, after, reason FROM review_log "
                   "WHERE submission_id = %s ORDER BY id",
            "events": "SELECT event_type FROM event_outbox WHERE target_id = %s::text "
                      "AND event_type = 'submission.reviewed'",
            "sagas": "SELECT status, error FROM saga_transactions WHERE steps -> 0 ->> 'submission_id' = %s::text",
        }.items():
            out[name] = await (await conn.execute(sql, (sid,))).fetchall()
    return out


async def test_override_of_a_completed_submission_runs_the_saga_and_replays(client, auth_headers, tenant_id, pools,
                                                                            pg_admin_url, temporal_client):
    headers = auth_headers(tenant_id)
    sid = await _completed(client, headers, pools, tenant_id, temporal_client)
    assert (await client.get(f"/v1/submissions/{sid}", headers=headers)).json()["total"] == 7.0  # warm the cache
    body = {"overrides": {"q4": {"score": 5, "feedback": "Excellent essay."}, "q3": {"score": 2}},
            "reason": "regrade after appeal"}
    reviewer = {**auth_headers(tenant_id, roles=("reviewer",)), "Idempotency-Key": f"review-{sid}"}
    resp = await client.post(f"/v1/submissions/{sid}/review", json=body, headers=reviewer)
    assert resp.status_code == 200, resp.text
    view = resp.json()
    results = {r["question_id"]: r for r in view["results"]}
    assert view["status"] == "completed" and view["total"] == 1.0 + 2.0 + 2.0 + 5.0
    assert results["q4"]["score"] == 5 and results["q4"]["feedback"] == "Excellent essay."
    assert results["q3"]["feedback"] == "graded q3" and results["q3"]["overridden"]
    assert not results["q1"]["overridden"] and not results["q2"]["overridden"]
    fresh = await client.get(f"/v1/submissions/{sid}", headers=headers)
    assert fresh.json()["total"] == 10.0 and fresh.headers["X-Cache"] == "miss"  # the old copy was invalidated

    replay = await client.post(f"/v1/submissions/{sid}/review", json=body, headers=reviewer)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == view
    state = await _state(pg_admin_url, sid)
    assert state["sagas"] == [("completed", None)]
    assert [(r[0], r[1], r[5]) for r in state["log"]] == [("override", "q3", "regrade after appeal"),
                                                         ("override", "q4", "regrade after appeal")]
    assert state["log"][1][3]["score"] == 3.0 and state["log"][1][4]["score"] == 5.0
    assert state["events"] == [("submission.reviewed",)]
    other_key = await client.post(f"/v1/submissions/{sid}/review", json={"overrides": {"q4": {"score": 4}}},
                                  headers={**reviewer, "Idempotency-Key": f"again-{sid}"})
    assert other_key.status_code == 200 and other_key.json()["total"] == 9.0  # a second override is a new saga


async def test_rejected_reviews_change_nothing(client, auth_headers, tenant_id, new_tenant, pools, pg_admin_url,
                                               temporal_client):
    headers = auth_headers(tenant_id)
    sid = await _completed(client, headers, pools, tenant_id, temporal_client)
    queued = await _submit(client, headers)
    before = await _state(pg_admin_url, sid)
    cases = [
        (f"/v1/submissions/{uuid.uuid4()}/review", {}, headers, 404, None),
        ("/v1/submissions/not-a-uuid/review", {}, headers, 422, "submission_id"),
        (f"/v1/submissions/{sid}/review", {}, auth_headers(new_tenant()), 404, None),
        (f"/v1/submissions/{queued}/review", {"overrides": {"q1": {"score": 1}}}, headers, 409, None),
        (f"/v1/submissions/{sid}/review", {"approve": False}, headers, 409, None),
        (f"/v1/submissions/{sid}/review", {"overrides": {"q1": {"score": 1.5}}}, headers, 422, "overrides.q1.score"),
        (f"/v1/submissions/{sid}/review", {"overrides": {"q1": {"score": -1}}}, headers, 422, "overrides.q1.score"),
        (f"/v1/submissions/{sid}/review", {"overrides": {"q9": {"score": 0}}}, headers, 422, "overrides.q9"),
        (f"/v1/submissions/{sid}/review", {"overrides": {}}, headers, 422, "overrides"),
        (f"/v1/submissions/{sid}/review", {"overrides": {"q1": {"score": 1, "x": 1}}}, headers, 422,
         "overrides.q1.x"),
        (f"/v1/submissions/{sid}/review", {"overrides": {"q1": {"score": 0}}},
         auth_headers(tenant_id, roles=("submitter",)), 403, None),
    ]
    for path, body, hdrs, status, field in cases:
        resp = await client.post(path, json=body, headers=hdrs)
        assert resp.status_code == status, (path, body, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)
        if field is not None:
            assert field in [e["field"] for e in resp.json()["errors"]], resp.json()
    assert await _state(pg_admin_url, sid) == before
    await temporal_client.get_workflow_handle(f"grade-{queued}").terminate("test done")


async def _wait_stage(temporal_client, sid: str, stage: str, timeout: float = 60) -> None:
    handle = temporal_client.get_workflow_handle(f"grade-{sid}")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if (await handle.query(QUERY_PROGRESS)).get("stage") == stage:
                return
        except Exception:  # noqa: BLE001 - not started yet
            pass
        assert asyncio.get_running_loop().time() < deadline, f"{sid} never reached {stage}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def review_api(app_settings, temporal_client, task_queue, pools, saver) -> Any:  # noqa: F811
    """The real API whose gradings always need review, with real grading workers on its queues."""
    from api.app import create_app

    app = create_app(app_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog",
                                      "low_confidence_threshold": 0.99})
    async with (grading_workers(temporal_client, pools, saver, app_settings, task_queue),
                running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http):
        yield http


async def test_needs_review_is_decided_through_the_workflow_update(review_api, auth_headers, tenant_id,
                                                                  pg_admin_url, temporal_client):
    headers = auth_headers(tenant_id)
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    approved, rejected, gone = [await _submit(review_api, headers) for _ in range(3)]
    for sid in (approved, rejected, gone):
        await _wait_stage(temporal_client, sid, "needs_review")
    flagged = (await review_api.get(f"/v1/submissions/{approved}", headers=headers)).json()
    assert flagged["status"] == "needs_review"

    before = await _state(pg_admin_url, approved)
    for body, field in [
        ({"overrides": {"q1": {"score": 0, "feedback": "x" * 10_001}}}, "overrides.q1.feedback"),
        ({"overrides": {"q9": {"score": 0, "feedback": "no such question"}}}, "overrides.q9"),
        ({"overrides": {"q1": {"score": 9, "feedback": "too many points"}}}, "overrides.q1.score"),
        ({"overrides": {q: {"score": 0, "feedback": "\U0001F600" * 10_000} for q in MAX_POINTS}},
         "overrides"),  # each within its limit, together too large for a workflow payload
    ]:
        bad = await review_api.post(f"/v1/submissions/{approved}/review", json=body, headers=reviewer)
        assert bad.status_code == 422, bad.text
        assert field in [e["field"] for e in bad.json()["errors"]], bad.json()
    assert await _state(pg_admin_url, approved) == before
    assert (await _state(pg_admin_url, approved))["submission"][0][0] == "needs_review"

    resp = await review_api.post(f"/v1/submissions/{approved}/review",
                                 json={"overrides": {"q1": {"score": 0, "feedback": "Option b was correct."},
                                                     "q2": {"score": 1}},
                                       "reason": "wrong option"},
                                 headers=reviewer)
    assert resp.status_code == 200, resp.text
    view = resp.json()
    results = {r["question_id"]: r for r in view["results"]}
    old = {r["question_id"]: r for r in flagged["results"]}
    assert view["status"] == "completed" and results["q1"]["score"] == 0 and results["q1"]["overridden"]
    assert results["q1"]["feedback"] == "Option b was correct."
    assert results["q2"]["score"] == 1 and results["q2"]["feedback"] == old["q2"]["feedback"]  # kept
    assert view["total"] == sum(r["score"] for r in view["results"])
    fresh = (await review_api.get(f"/v1/submissions/{approved}", headers=headers)).json()
    assert {r["question_id"]: r["feedback"] for r in fresh["results"]}["q1"] == "Option b was correct."
    assert (await temporal_client.get_workflow_handle(f"grade-{approved}").result())["status"] == "completed"
    state = await _state(pg_admin_url, approved)
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        stored = await (await conn.execute("SELECT feedback, overridden FROM grading_results "
                                           "WHERE submission_id = %s AND question_id = 'q1'", (approved,))).fetchall()
    assert stored == [("Option b was correct.", True)]
    assert [(r[0], r[5]) for r in state["log"]] == [("review_approved", "wrong option")]
    assert state["log"][0][4]["feedback"] == {"q1": "Option b was correct."}
    assert state["log"][0][3]["feedback"] == {"q1": old["q1"]["feedback"]}
    assert state["sagas"] == []  # the workflow applied it, not the saga

    resp = await review_api.post(f"/v1/submissions/{rejected}/review", json={"approve": False}, headers=reviewer)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "failed" and "rejected by reviewer" in resp.json()["error"]

    await temporal_client.get_workflow_handle(f"grade-{gone}").terminate("review deadline, as it were")
    resp = await review_api.post(f"/v1/submissions/{gone}/review", json={}, headers=reviewer)
    assert resp.status_code == 409, resp.text
    assert (await review_api.get(f"/v1/submissions/{gone}", headers=headers)).json()["status"] == "needs_review"
