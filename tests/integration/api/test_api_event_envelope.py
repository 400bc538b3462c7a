# ruff: noqa: F811 - pytest fixtures imported from the review tests and the workflow harness
"""The event envelope over a submission's whole life, through the real API, workers and PostgreSQL.

A submission is received, graded (flagged), reviewed through its workflow, asked to be regraded
twice (one request accepted through the review saga, one rejected). Every event of it shares the
submission's id as ``correlation_id``; each one after ``submission.received`` names an earlier event
of the same submission as its ``causation_id`` (and the expected one: the grading is caused by the
reception, the reviews by the grading, a resolution by its request).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.integration.api.test_api_review import _submit, _wait_stage, review_api  # noqa: F401 - fixture
from tests.integration.workflows.harness import saver  # noqa: F401 - fixture

EVENTS_SQL = """
SELECT id, event_id::text AS event_id, event_type, target_type, target_id, correlation_id, causation_id, payload
  FROM event_outbox
 WHERE target_id = %(sid)s OR correlation_id = %(sid)s OR payload->>'submission_id' = %(sid)s
 ORDER BY id"""


async def _events(admin_url: str, sid: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(admin_url, row_factory=dict_row) as conn:
        return await (await conn.execute(EVENTS_SQL, {"sid": sid})).fetchall()


def _one(events: list[dict[str, Any]], event_type: str, **payload: Any) -> dict[str, Any]:
    found = [e for e in events if e["event_type"] == event_type
             and all(e["payload"].get(k) == v for k, v in payload.items())]
    assert len(found) == 1, (event_type, payload, events)
    return found[0]


async def test_a_submissions_events_share_its_correlation_and_name_their_causes(
        review_api, auth_headers, tenant_id, pg_admin_url, temporal_client) -> None:
    admin, reviewer = auth_headers(tenant_id), auth_headers(tenant_id, roles=("reviewer",))
    sid = await _submit(review_api, admin)
    await _wait_stage(temporal_client, sid, "needs_review")
    reviewed = await review_api.post(f"/v1/submissions/{sid}/review", headers=reviewer,
                                     json={"overrides": {"q1": {"score": 0}}, "reason": "checked"})
    assert reviewed.status_code == 200 and reviewed.json()["status"] == "completed", reviewed.text
    assert (await temporal_client.get_workflow_handle(f"grade-{sid}").result())["status"] == "completed"
    requests = []
    for question in ("q2", "q3"):
        asked = await review_api.post(f"/v1/submissions/{sid}/regrade-requests", headers=admin,
                                      json={"question_id": question, "reason": "please look again"})
        assert asked.status_code == 201, asked.text
        requests.append(asked.json()["id"])
    accepted = await review_api.post(f"/v1/regrade-requests/{requests[0]}/accept", headers=reviewer,
                                     json={"score": 1.5, "reason": "fair"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted", accepted.text
    rejected = await review_api.post(f"/v1/regrade-requests/{requests[1]}/reject", headers=reviewer,
                                     json={"reason": "graded right"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected", rejected.text

    events = await _events(pg_admin_url, sid)
    assert all(e["correlation_id"] == sid for e in events), [(e["event_type"], e["correlation_id"]) for e in events]
    first, later = events[0], events[1:]
    assert first["event_type"] == "submission.received" and first["causation_id"] is None
    seen = {first["event_id"]}
    for event in later:
        assert event["causation_id"] in seen, (event, events)  # an earlier event of this submission
        seen.add(event["event_id"])

    received = first["event_id"]
    graded = _one(events, "submission.graded")
    assert graded["payload"]["status"] == "needs_review" and graded["causation_id"] == received
    assert _one(events, "submission.status_changed", status="grading")["causation_id"] == received
    by_workflow = _one(events, "submission.reviewed", status="completed", **{"from": "needs_review"})
    assert by_workflow["causation_id"] == graded["event_id"]
    by_saga = [e for e in events if e["event_type"] == "submission.reviewed" and e["payload"].get("saga_id")]
    assert len(by_saga) == 1 and by_saga[0]["causation_id"] == graded["event_id"]
    for request_id, outcome in zip(requests, ("accepted", "rejected"), strict=True):
        asked = _one(events, "regrade_request.created", question_id="q2" if outcome == "accepted" else "q3")
        assert asked["target_id"] == request_id and asked["causation_id"] == graded["event_id"]
        resolved = _one(events, "regrade_request.resolved", status=outcome)
        assert resolved["target_id"] == request_id and resolved["causation_id"] == asked["event_id"]
