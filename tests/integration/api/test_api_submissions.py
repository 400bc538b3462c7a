"""Submissions through the real API: the intake transaction, start failure, cached reads, bad input."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from infra.cache.keys import submission_key
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server

PROBLEM = "application/problem+json"


async def _exam(client, headers) -> str:
    resp = await client.post("/v1/exams", json=exam_body(), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


async def _rows(pg_admin_url, submission_id):
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        sub = await (await conn.execute(
            "SELECT status, workflow_id, trace_id FROM submissions WHERE id = %s", (submission_id,))).fetchone()
        answers = await (await conn.execute(
            "SELECT question_id, answer FROM answers WHERE submission_id = %s ORDER BY question_id",
            (submission_id,))).fetchall()
        events = await (await conn.execute(
            "SELECT event_type, payload, trace_id FROM event_outbox WHERE target_id = %s",
            (submission_id,))).fetchall()
    return sub, answers, events


async def test_submit_commits_submission_answers_and_event_together(client, auth_headers, tenant_id,
                                                                    pg_admin_url, temporal_client):
    exam_id = await _exam(client, auth_headers(tenant_id))
    trace = uuid.uuid4().hex
    resp = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s1",
                                                      "answers": GOOD_ANSWERS},
                             headers={**auth_headers(tenant_id), "traceparent": f"00-{trace}-{'1' * 16}-01"})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    sid = body["submission_id"]
    assert body == {"submission_id": sid, "workflow_id": f"grade-{sid}", "trace_id": trace, "status": "queued"}
    sub, answers, events = await _rows(pg_admin_url, sid)
    assert sub == ("queued", f"grade-{sid}", trace)
    assert {qid: a for qid, a in answers} == {"q1": ["b"], "q2": 42.0, "q3": GOOD_ANSWERS["q3"],
                                               "q4": GOOD_ANSWERS["q4"]}
    assert [(e[0], e[2]) for e in events] == [("submission.received", trace)]
    assert events[0][1] == {"submission_id": sid, "exam_id": exam_id, "student_id": "s1", "trace_id": trace}
    description = await temporal_client.get_workflow_handle(f"grade-{sid}").describe()
    assert description.memo is not None or description.id == f"grade-{sid}"
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


async def test_trace_id_is_generated_without_traceparent(client, auth_headers, tenant_id):
    exam_id = await _exam(client, auth_headers(tenant_id))
    resp = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s1", "answers": {}},
                             headers={**auth_headers(tenant_id), "traceparent": "garbage"})
    assert resp.status_code == 202
    trace = resp.json()["trace_id"]
    assert len(trace) == 32 and int(trace, 16) >= 0


@pytest.mark.parametrize("client_kind", ["unreachable-at-startup", "lazy-client-on-closed-port"])
async def test_start_failure_still_answers_202_and_leaves_the_outbox_row(app_settings, auth_headers, tenant_id,
                                                                         pg_admin_url, closed_port,
                                                                         temporal_client, client_kind):
    from temporalio.client import Client

    from api.app import create_app

    address = f"127.0.0.1:{closed_port}"
    settings = app_settings.model_copy(update={"temporal_address": address})
    broken = await Client.connect(address, lazy=True) if client_kind.startswith("lazy") else None
    app = create_app(settings, temporal_client=broken)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        assert app.state.temporal is broken
        exam_id = await _exam(http, auth_headers(tenant_id))
        resp = await http.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s1",
                                                        "answers": GOOD_ANSWERS}, headers=auth_headers(tenant_id))
        assert resp.status_code == 202, resp.text
        sid = resp.json()["submission_id"]
        ready = await http.get("/v1/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["temporal"].startswith("error")
    sub, answers, events = await _rows(pg_admin_url, sid)
    assert sub[0] == "queued" and len(answers) == 4
    assert [e[0] for e in events] == ["submission.received"]
    from temporalio.service import RPCError

    with pytest.raises(RPCError):
        await temporal_client.get_workflow_handle(f"grade-{sid}").describe()


async def test_submission_read_goes_redis_first_and_degrades_without_redis(
        client, auth_headers, tenant_id, pools, app_settings, closed_port, temporal_client):
    from api.app import create_app

    exam_id = await _exam(client, auth_headers(tenant_id))
    sid = (await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s9",
                                                      "answers": {"q1": "a"}},
                             headers=auth_headers(tenant_id))).json()["submission_id"]
    first = await client.get(f"/v1/submissions/{sid}", headers=auth_headers(tenant_id))
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    view = first.json()
    assert view["status"] == "queued" and view["student_id"] == "s9" and view["max_total"] == 10
    assert await pools.redis.exists(submission_key(tenant_id, sid))
    second = await client.get(f"/v1/submissions/{sid}", headers=auth_headers(tenant_id))
    assert second.headers["x-cache"] == "hit" and second.json() == view

    settings = app_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{closed_port}/0"})
    async with running_server(create_app(settings, temporal_client=temporal_client)) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as http:
        degraded = await http.get(f"/v1/submissions/{sid}", headers=auth_headers(tenant_id))
        assert degraded.status_code == 200 and degraded.headers["x-cache"] == "degraded"
        assert degraded.json() == view
        ready = await http.get("/v1/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"].startswith("error")
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


async def test_unknown_submission_and_other_tenants_are_404(client, auth_headers, tenant_id, new_tenant,
                                                            temporal_client):
    exam_id = await _exam(client, auth_headers(tenant_id))
    sid = (await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s", "answers": {}},
                             headers=auth_headers(tenant_id))).json()["submission_id"]
    for path in (f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/progress"):
        other = await client.get(path, headers=auth_headers(new_tenant()))
        assert other.status_code == 404 and other.headers["content-type"] == PROBLEM
    for path in (f"/v1/submissions/{uuid.uuid4()}", f"/v1/submissions/{uuid.uuid4()}/progress"):
        assert (await client.get(path, headers=auth_headers(tenant_id))).status_code == 404
    malformed = await client.get("/v1/submissions/nope/progress", headers=auth_headers(tenant_id))
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "submission_id"
    progress = await client.get(f"/v1/submissions/{sid}/progress", headers=auth_headers(tenant_id))
    assert progress.status_code == 200
    assert progress.json()["status"] == "queued"
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


@pytest.mark.parametrize(("answers", "field"), [
    ({"q9": "a"}, "answers.q9"),
    ({"q1": 3}, "answers.q1"),
    ({"q1": "zzz"}, "answers.q1"),
    ({"q2": "forty"}, "answers.q2"),
    ({"q2": True}, "answers.q2"),
    ({"q3": ["list"]}, "answers.q3"),
    ({"q4": "x" * 20_001}, "answers.q4"),
])
async def test_bad_answers_are_422_naming_the_field_and_store_nothing(client, auth_headers, tenant_id,
                                                                      count_rows, answers, field):
    exam_id = await _exam(client, auth_headers(tenant_id))
    before = await count_rows(tenant_id)
    resp = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s1",
                                                      "answers": {**GOOD_ANSWERS, **answers}},
                             headers=auth_headers(tenant_id))
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == PROBLEM
    problem = resp.json()
    assert problem["status"] == 422 and problem["instance"] == "/v1/submissions"
    assert [e["field"] for e in problem["errors"]] == [field]
    assert await count_rows(tenant_id) == before


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"exam_id": str(uuid.uuid4()), "student_id": "s", "answers": {}}, 404, "exam_id"),
    ({"exam_id": "not-a-uuid", "student_id": "s", "answers": {}}, 422, "exam_id"),
    ({"exam_id": "EXAM", "student_id": "", "answers": {}}, 422, "student_id"),
    ({"exam_id": "EXAM", "student_id": "s"}, 422, "answers"),
    ({"exam_id": "EXAM", "student_id": "s", "answers": {}, "extra": 1}, 422, "extra"),
])
async def test_bad_submission_bodies(client, auth_headers, tenant_id, count_rows, body, status, field):
    exam_id = await _exam(client, auth_headers(tenant_id))
    body = {k: (exam_id if v == "EXAM" else v) for k, v in body.items()}
    before = await count_rows(tenant_id)
    resp = await client.post("/v1/submissions", json=body, headers=auth_headers(tenant_id))
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert field in [e["field"] for e in resp.json()["errors"]]
    assert await count_rows(tenant_id) == before


async def test_other_tenants_exam_cannot_be_submitted_to(client, auth_headers, tenant_id, new_tenant, count_rows):
    exam_id = await _exam(client, auth_headers(tenant_id))
    intruder = new_tenant()
    resp = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s", "answers": {}},
                             headers=auth_headers(intruder))
    assert resp.status_code == 404
    assert (await count_rows(intruder))["submissions"] == 0


async def test_huge_submission_is_413_and_stores_nothing(client, auth_headers, tenant_id, count_rows):
    exam_id = await _exam(client, auth_headers(tenant_id))
    before = await count_rows(tenant_id)
    resp = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s",
                                                      "answers": {"q4": "y" * (1024 * 1024)}},
                             headers=auth_headers(tenant_id))
    assert resp.status_code == 413 and resp.headers["content-type"] == PROBLEM
    assert await count_rows(tenant_id) == before


async def test_health(client):
    assert (await client.get("/v1/health")).json() == {"status": "ok"}
    ready = await client.get("/v1/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "temporal": "ok",
                                                       "disk": "ok"}}
