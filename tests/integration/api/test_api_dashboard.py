"""The API side of the dashboard against the real served app: ``/`` and ``/ui`` pages, the dev token
(absent in prod), a submission's answers and an exam's counts by status (roles and tenants checked)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.security.tokens import TENANT_RE, mint_token, verify_token
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server

STORED_ANSWERS = {**GOOD_ANSWERS, "q1": ["b"], "q2": 42.0}
"""As intake stores them: a choice as its list of options, a number as a float."""
PAGES = ("/ui", "/ui/signin", "/ui/review", f"/ui/exams/{uuid.uuid4()}", f"/ui/submissions/{uuid.uuid4()}")


@pytest.fixture
async def client(api):
    """The real API with rate limits that never interfere (the anonymous dev-token posts share one bucket)."""
    yield api


async def test_pages_are_served_with_their_assets_and_root_redirects(client):
    root = await client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui"
    for path in PAGES:
        page = await client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert 'href="/ui/static/app.css"' in page.text and "https://" not in page.text, path
    for asset in ("app.css", "common.js", "exam.js", "review.js", "submission.js", "signin.js", "favicon.svg"):
        assert (await client.get(f"/ui/static/{asset}")).status_code == 200, asset
    bad = await client.get("/ui/exams/not-an-id")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"] == "exam_id" for e in bad.json()["errors"]), bad.json()


async def test_dev_token_outside_prod_mints_a_reviewer_token_that_the_api_accepts(client, app_settings, tenant_id):
    signin = await client.get("/ui/signin")
    assert 'data-dev-token-url="/v1/dev/token"' in signin.text and 'id="dev-form"' in signin.text
    minted = await client.post("/v1/dev/token", json={"tenant": tenant_id})
    assert minted.status_code == 200, minted.text
    body = minted.json()
    principal = verify_token(app_settings, body["token"])
    assert (principal.tenant_id, principal.roles, body["roles"]) == (tenant_id, frozenset({"reviewer"}), ["reviewer"])
    listed = await client.get("/v1/exams", headers={"Authorization": f"Bearer {body['token']}"})
    assert listed.status_code == 200, listed.text
    bad = await client.post("/v1/dev/token", json={"tenant": "no spaces allowed"})
    assert bad.status_code == 422 and any(e["field"] == "tenant" for e in bad.json()["errors"]), bad.text
    spec = (await client.get("/openapi.json")).json()
    assert spec["paths"]["/v1/dev/token"]["post"]["security"] == []


@given(tenant=st.from_regex(TENANT_RE, fullmatch=True), other=st.text(max_size=70))
async def test_dev_token_is_for_exactly_the_tenant_asked(client, app_settings, tenant, other):
    minted = await client.post("/v1/dev/token", json={"tenant": tenant})
    assert minted.status_code == 200, minted.text
    assert verify_token(app_settings, minted.json()["token"]).tenant_id == tenant
    refused = await client.post("/v1/dev/token", json={"tenant": other})
    assert refused.status_code == (200 if TENANT_RE.fullmatch(other) else 422), refused.text


async def test_in_prod_there_is_no_dev_token_and_no_dev_button(app_settings, temporal_client):
    from api.app import create_app

    prod = app_settings.model_copy(update={"env": "prod"})  # secrets untouched: only the environment name matters
    async with running_server(create_app(prod, temporal_client=temporal_client)) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as http:
        minted = await http.post("/v1/dev/token", json={"tenant": "dev"})
        assert minted.status_code == 404, minted.text
        assert minted.headers["content-type"].startswith("application/problem+json")
        signin = await http.get("/ui/signin")
        assert signin.status_code == 200 and "dev-form" not in signin.text and "/v1/dev/token" not in signin.text
        assert "/v1/dev/token" not in (await http.get("/openapi.json")).json()["paths"]


async def test_answers_and_counts_follow_roles_and_tenants(client, auth_headers, app_settings, tenant_id, new_tenant):
    admin = auth_headers(tenant_id)
    exam = (await client.post("/v1/exams", json=exam_body(), headers=admin)).json()
    mine = {"Authorization": f"Bearer {mint_token(app_settings, tenant=tenant_id, roles=['submitter'], sub='lms-a')}"}
    theirs = {"Authorization": f"Bearer {mint_token(app_settings, tenant=tenant_id, roles=['submitter'], sub='lms-b')}"}
    created = await client.post("/v1/submissions", headers=mine,
                                json={"exam_id": exam["id"], "student_id": "s-1", "answers": GOOD_ANSWERS})
    assert created.status_code == 202, created.text
    sid = created.json()["submission_id"]
    partial = await client.post("/v1/submissions", headers=mine,
                                json={"exam_id": exam["id"], "student_id": "s-2", "answers": {"q1": "a"}})
    assert partial.status_code == 202, partial.text

    for headers in (admin, auth_headers(tenant_id, roles=("reviewer",)), mine):
        got = await client.get(f"/v1/submissions/{sid.upper()}/answers", headers=headers)
        assert got.status_code == 200, got.text
        assert got.json() == {"submission_id": sid, "answers": STORED_ANSWERS}
    only_q1 = await client.get(f"/v1/submissions/{partial.json()['submission_id']}/answers", headers=admin)
    assert only_q1.json()["answers"] == {"q1": ["a"]}
    for headers in (theirs, auth_headers(new_tenant())):  # another caller's or another tenant's: not found
        assert (await client.get(f"/v1/submissions/{sid}/answers", headers=headers)).status_code == 404
    assert (await client.get(f"/v1/submissions/{sid}/answers")).status_code == 401
    bad = await client.get("/v1/submissions/nope/answers", headers=admin)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "submission_id"

    counts = await client.get(f"/v1/exams/{exam['id']}/counts", headers=admin)
    assert counts.status_code == 200, counts.text
    body = counts.json()
    assert body["exam_id"] == exam["id"] and body["total"] == 2  # no workers: both stay queued
    assert body["submissions_by_status"] == {"queued": 2}
    assert (await client.get(f"/v1/exams/{exam['id']}/counts", headers=mine)).status_code == 403
    assert (await client.get(f"/v1/exams/{exam['id']}/counts", headers=auth_headers(new_tenant()))).status_code == 404
    assert (await client.get(f"/v1/exams/{uuid.uuid4()}/counts", headers=admin)).status_code == 404


async def test_the_dashboards_static_files_are_not_rate_limited_but_its_pages_are(app_settings, temporal_client):
    from api.app import create_app

    tight = app_settings.model_copy(update={"rate_limit_read": "3/minute"})
    async with running_server(create_app(tight, temporal_client=temporal_client)) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as http:
        codes = [(await http.get("/ui")).status_code for _ in range(4)]  # pages spend the address's reads
        assert codes[-1] == 429, codes
        for _ in range(10):  # with the bucket empty, a page's scripts and styles still load
            assert (await http.get("/ui/static/common.js")).status_code == 200
