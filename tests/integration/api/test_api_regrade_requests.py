"""Regrade requests through the real API: the submitter asks, reviewers list, accept (saga) or reject.

The submission is completed with known results (as in ``test_api_review``); acceptance runs the real
review saga, so the score, the score history (source ``request``), the audit log and the outbox
events are all checked in PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import psycopg

from infra.security.tokens import mint_token
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.test_api_review import MAX_POINTS, complete_submission

GRADES = {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 3.0}


def _token(settings, tenant_id: str, roles: list[str], sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(settings, tenant=tenant_id, roles=roles, sub=sub)}"}


async def _completed(client, pools, temporal_client, tenant_id: str, lms: dict[str, str], reviewer) -> str:
    exam = await client.post("/v1/exams", json=exam_body(), headers=reviewer)
    sub = await client.post("/v1/submissions", json={"exam_id": exam.json()["id"], "student_id": "s1",
                                                     "answers": GOOD_ANSWERS}, headers=lms)
    assert sub.status_code == 202, sub.text
    sid = sub.json()["submission_id"]
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("graded by the test")
    await complete_submission(pools, tenant_id, sid, {q: (s, MAX_POINTS[q]) for q, s in GRADES.items()})
    return sid


async def _rows(pg_admin_url: str, sql: str, *params: Any) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def test_request_accept_and_reject(client, app_settings, tenant_id, pools, temporal_client, pg_admin_url):
    lms = _token(app_settings, tenant_id, ["submitter"], "lms-1")
    reviewer = _token(app_settings, tenant_id, ["reviewer"], "teacher-1")
    sid = await _completed(client, pools, temporal_client, tenant_id, lms, reviewer)
    url = f"/v1/submissions/{sid}/regrade-requests"

    first = await client.post(url, json={"question_id": "q2", "reason": "42 is right"}, headers=lms)
    assert first.status_code == 201, first.text
    req = first.json()
    assert (req["status"], req["question_id"], req["requested_by"], req["submission_id"]) == \
        ("open", "q2", "lms-1", sid)
    again = await client.post(url, json={"question_id": "q2", "reason": "again"}, headers=lms)
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    unknown = await client.post(url, json={"question_id": "q9", "reason": "?"}, headers=lms)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "question_id"
    blank = await client.post(url, json={"question_id": "q3"}, headers=lms)
    assert blank.status_code == 422 and "reason" in blank.text
    not_mine = await client.post(url, json={"question_id": "q3", "reason": "x"},
                                 headers=_token(app_settings, tenant_id, ["submitter"], "lms-2"))
    assert not_mine.status_code == 404
    assert (await client.post(url, json={"question_id": "q3", "reason": "x"}, headers=reviewer)).status_code == 403
    other_tenant = _token(app_settings, f"{tenant_id}-x", ["admin"], "root")
    assert (await client.post(url, json={"question_id": "q3", "reason": "x"},
                              headers=other_tenant)).status_code == 404
    second = (await client.post(url, json={"question_id": "q3", "reason": "synonym"}, headers=lms)).json()

    assert (await client.get("/v1/regrade-requests", headers=lms)).status_code == 403
    pages, cursor = [], None
    while True:
        page = await client.get("/v1/regrade-requests", headers=reviewer,
                                params={"status": "open", "page_size": 1, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 1
        pages += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [r["id"] for r in pages] == [req["id"], second["id"]]
    assert (await client.get("/v1/regrade-requests", headers=other_tenant)).json()["items"] == []

    too_high = await client.post(f"/v1/regrade-requests/{req['id']}/accept", json={"score": 3}, headers=reviewer)
    assert too_high.status_code == 422 and too_high.json()["errors"][0]["field"] == "score"
    accepted = await client.post(f"/v1/regrade-requests/{req['id']}/accept",
                                 json={"score": 2, "reason": "42 within tolerance"}, headers=reviewer)
    assert accepted.status_code == 200, accepted.text
    done = accepted.json()
    assert (done["status"], done["old_score"], done["new_score"], done["resolved_by"]) == \
        ("accepted", 0.0, 2.0, "teacher-1")
    assert (await client.post(f"/v1/regrade-requests/{req['id']}/accept", json={"score": 1},
                              headers=reviewer)).status_code == 409
    view = (await client.get(f"/v1/submissions/{sid}", headers=lms)).json()
    assert {r["question_id"]: r["score"] for r in view["results"]}["q2"] == 2.0 and view["total"] == 7.0
    history = (await client.get(f"/v1/submissions/{sid}/history", headers=lms)).json()["items"]
    assert [(h["question_id"], h["old_score"], h["new_score"], h["source"], h["actor_id"], h["reason"])
            for h in history if h["source"] != "agent"] == [("q2", 0.0, 2.0, "request", "teacher-1",
                                                             "42 within tolerance")]

    no_reason = await client.post(f"/v1/regrade-requests/{second['id']}/reject", json={}, headers=reviewer)
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    rejected = await client.post(f"/v1/regrade-requests/{second['id']}/reject",
                                 json={"reason": "the rubric wants the term"}, headers=reviewer)
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["resolution_reason"]) == \
        ("rejected", "the rubric wants the term")
    assert (await client.post(f"/v1/regrade-requests/{second['id']}/reject", json={"reason": "x"},
                              headers=reviewer)).status_code == 409
    assert (await client.post(f"/v1/regrade-requests/{second['id']}/reject", json={"reason": "x"},
                              headers=other_tenant)).status_code == 404
    listed = await client.get("/v1/regrade-requests", params={"status": "open"}, headers=reviewer)
    assert listed.json()["items"] == []
    assert {r["id"] for r in (await client.get("/v1/regrade-requests", params={"status": "accepted"},
                                                headers=reviewer)).json()["items"]} == {req["id"]}

    log = await _rows(pg_admin_url, "SELECT action, question_id, actor_id FROM review_log WHERE submission_id = %s "
                                    "ORDER BY id", sid)
    assert log == [("regrade_requested", "q2", "lms-1"), ("regrade_requested", "q3", "lms-1"),
                   ("override", "q2", "teacher-1"), ("regrade_request_rejected", "q3", "teacher-1")]
    events = await _rows(pg_admin_url, "SELECT event_type, target_id, payload->>'status' FROM event_outbox "
                                       "WHERE target_type = 'regrade_request' AND tenant_id = %s ORDER BY id",
                         tenant_id)
    assert events == [("regrade_request.created", req["id"], "open"), ("regrade_request.created", second["id"], "open"),
                      ("regrade_request.resolved", req["id"], "accepted"),
                      ("regrade_request.resolved", second["id"], "rejected")]
    saga = await _rows(pg_admin_url, "SELECT status FROM saga_transactions WHERE id = %s::uuid", done["saga_id"])
    assert saga == [("completed",)]
