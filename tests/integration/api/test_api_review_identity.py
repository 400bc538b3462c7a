"""A review decision that could not be recorded is never accepted, so no submission is stuck in review.

Issue 9: a reviewer token whose ``sub`` held a NUL was accepted, the workflow took the update, then
the audit write failed and the submission stayed ``needs_review`` for good. The API now refuses such
claims (401), and the workflow's update validator refuses any decision PostgreSQL could not store,
whoever sends it (another client, the Temporal CLI).
"""

from __future__ import annotations

import time

import jwt
import psycopg
import pytest
from temporalio.client import WorkflowUpdateFailedError

from infra.constants import QUERY_PROGRESS, UPDATE_REVIEW
from tests.integration.api.test_api_review import _submit, _wait_stage, review_api  # noqa: F401 - fixture
from tests.integration.workflows.harness import saver  # noqa: F401 - fixture
from workflows.grading import ReviewAck, ReviewInput


def _reviewer(settings, tenant_id: str, sub: str) -> dict[str, str]:
    claims = {"sub": sub, "tenant": tenant_id, "roles": ["reviewer"], "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, settings.jwt_secret, algorithm='HS256')}"}


UNRECORDABLE = [
    ReviewInput(reviewer="rev\x00iewer"),
    ReviewInput(reviewer="rev\udc00"),
    ReviewInput(reviewer="rev\nnewline"),
    ReviewInput(reviewer=""),
    ReviewInput(reviewer="   "),
    ReviewInput(reviewer="x" * 257),
    ReviewInput(reviewer="ok", overrides={"q1": float("nan")}),
    ReviewInput(reviewer="ok", overrides={"q1": float("inf")}),
    ReviewInput(reviewer="ok", overrides={"q1": -1.0}),
    ReviewInput(reviewer="ok", overrides={"q\x00": 0.0}),
    ReviewInput(reviewer="ok", feedback={"q1": "fine\x00"}),
    ReviewInput(reviewer="ok", feedback={"q1": "\ud800"}),
    ReviewInput(reviewer="ok", feedback={"q1": "x" * 10_001}),
]


async def test_unrecordable_decisions_are_refused_and_the_review_still_completes(
        review_api, app_settings, auth_headers, tenant_id, temporal_client, pg_admin_url) -> None:
    sid = await _submit(review_api, auth_headers(tenant_id))
    await _wait_stage(temporal_client, sid, "needs_review")
    for sub in ("rev\x00iewer", "rev\udc00", "rev\tiewer"):  # through the API: the token is refused
        resp = await review_api.post(f"/v1/submissions/{sid}/review", json={},
                                     headers=_reviewer(app_settings, tenant_id, sub))
        assert resp.status_code == 401, resp.text
    handle = temporal_client.get_workflow_handle(f"grade-{sid}")
    for decision in UNRECORDABLE:  # whoever sends it, the workflow refuses it
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(UPDATE_REVIEW, decision, result_type=ReviewAck)
    assert (await handle.query(QUERY_PROGRESS))["stage"] == "needs_review"  # still awaiting a reviewer

    ok = await review_api.post(f"/v1/submissions/{sid}/review", json={"overrides": {"q1": {"score": 0}}},
                               headers=_reviewer(app_settings, tenant_id, "reviewer-1"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "completed"
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        cur = await conn.execute("SELECT actor_id, action FROM review_log WHERE submission_id = %s", (sid,))
        assert await cur.fetchall() == [("reviewer-1", "review_approved")]
