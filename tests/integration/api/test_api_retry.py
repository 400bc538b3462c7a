"""``POST /v1/submissions/{id}/retry``: admins only, needs_intervention only, audited, resumes grading."""

from __future__ import annotations

import asyncio

import psycopg

from tests.integration.api.conftest import exam_body
from tests.integration.workflows.harness import gf_settings, grading_workers, saver  # noqa: F401 - fixtures

SET_STATUS_SQL = "UPDATE submissions SET status = %s, error = %s WHERE id = %s"
AUDIT_SQL = "SELECT actor_id, action, reason FROM review_log WHERE submission_id = %s"


async def _submission(client, headers) -> str:
    exam = (await client.post("/v1/exams", json=exam_body(), headers=headers)).json()
    body = {"exam_id": exam["id"], "student_id": "s-1", "answers": {"q1": "b", "q2": 42}}
    accepted = await client.post("/v1/submissions", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["submission_id"]


async def _force_status(pg_admin_url: str, submission_id: str, *statuses: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        for status in statuses:
            await conn.execute(SET_STATUS_SQL, (status, "InternalError: injected", submission_id))


async def test_retry_is_for_admins_on_needs_intervention_only(client, auth_headers, tenant_id, pg_admin_url):
    admin = auth_headers(tenant_id)
    sid = await _submission(client, admin)  # queued: no worker serves this test's queues
    body = {"reason": "dependency fixed"}

    reviewer = await client.post(f"/v1/submissions/{sid}/retry", json=body,
                                 headers=auth_headers(tenant_id, roles=("reviewer",)))
    assert reviewer.status_code == 403
    queued = await client.post(f"/v1/submissions/{sid}/retry", json=body, headers=admin)
    assert queued.status_code == 409 and queued.headers["content-type"].startswith("application/problem+json")
    assert queued.json()["type"].endswith("retry-conflict") and "queued" in queued.json()["detail"]
    missing = await client.post("/v1/submissions/00000000-0000-4000-8000-000000000000/retry", json=body,
                                headers=admin)
    assert missing.status_code == 404
    other_tenant = await client.post(f"/v1/submissions/{sid}/retry", json=body,
                                     headers=auth_headers(f"{tenant_id}-other"))
    assert other_tenant.status_code == 404
    no_reason = await client.post(f"/v1/submissions/{sid}/retry", json={}, headers=admin)
    assert no_reason.status_code == 422 and "reason" in no_reason.text


async def test_retry_starts_a_new_run_that_grades_and_is_audited(client, auth_headers, tenant_id, pg_admin_url,
                                                                   temporal_client, pools, saver, gf_settings,
                                                                   task_queue):
    admin = auth_headers(tenant_id)
    sid = await _submission(client, admin)
    handle = temporal_client.get_workflow_handle(f"grade-{sid}")
    await handle.terminate("simulated crash of the orchestration before grading")
    first_run = (await handle.describe()).run_id
    await _force_status(pg_admin_url, sid, "needs_intervention")

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue):
        response = await client.post(f"/v1/submissions/{sid.upper()}/retry", json={"reason": "worker fixed"},
                                     headers=admin)
        assert response.status_code == 202, response.text
        out = response.json()
        assert out["submission_id"] == sid and out["previous_run_id"] == first_run and out["run_id"] != first_run
        again = await client.post(f"/v1/submissions/{sid}/retry", json={"reason": "twice"}, headers=admin)
        assert again.status_code == 409  # a run is in progress (or it already finished): never two runs
        for _ in range(300):
            view = (await client.get(f"/v1/submissions/{sid}", headers=admin)).json()
            if view["status"] in ("completed", "needs_review"):
                break
            await asyncio.sleep(0.1)
    assert view["status"] in ("completed", "needs_review") and len(view["results"]) == 4
    async with pools.transaction(tenant_id) as conn:
        audit = await (await conn.execute(AUDIT_SQL, (sid,))).fetchall()
    assert [(a["action"], a["reason"]) for a in audit] == [("retry_requested", "worker fixed")]


async def test_clients_see_the_kind_of_failure_not_its_internal_text(client, auth_headers, tenant_id,
                                                                     pg_admin_url):
    admin = auth_headers(tenant_id)
    sid = await _submission(client, admin)
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        await conn.execute(SET_STATUS_SQL, ("needs_intervention",
                                            "InvalidResult: new row violates check constraint, params (3.0, 'q1')",
                                            sid))
    view = (await client.get(f"/v1/submissions/{sid}", headers=admin)).json()
    assert view["status"] == "needs_intervention"
    assert view["error"].startswith("grading stopped (InvalidResult)") and "params" not in view["error"]
