# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""50 concurrent identical POSTs with one key: one submission, one workflow, never a second resource."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from infra.constants import grading_workflow_id
from tests.integration.api_contract.fixtures import create_exam, new_tenant, submission_body

CONCURRENCY = 50


async def test_fifty_concurrent_posts_with_one_key_make_one_submission(api, bearer, pg_admin_url,
                                                                      temporal_client) -> None:
    tenant = new_tenant()
    headers = bearer(tenant)
    exam_id = await create_exam(api, headers)
    keyed = {**headers, "Idempotency-Key": f"race-{uuid.uuid4()}"}
    body = submission_body(exam_id, "s-race")
    responses = await asyncio.gather(*[api.post("/v1/submissions", json=body, headers=keyed)
                                       for _ in range(CONCURRENCY)])

    codes = sorted({r.status_code for r in responses})
    assert set(codes) <= {202, 409}, [(r.status_code, r.text) for r in responses if r.status_code not in (202, 409)]
    accepted = [r for r in responses if r.status_code == 202]
    originals = [r for r in accepted if r.headers.get("idempotent-replayed") != "true"]
    assert len(originals) == 1
    assert len({r.json()["submission_id"] for r in accepted}) == 1
    for busy in (r for r in responses if r.status_code == 409):
        assert int(busy.headers["retry-after"]) >= 1
        assert busy.headers["content-type"] == "application/problem+json"

    # after the dust settles a retry is a replay of the original
    replay = await api.post("/v1/submissions", json=body, headers=keyed)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    submission_id = originals[0].json()["submission_id"]
    assert replay.json() == originals[0].json()

    with psycopg.connect(pg_admin_url) as conn:
        subs = conn.execute("SELECT id FROM submissions WHERE tenant_id = %s", (tenant,)).fetchall()
        events = conn.execute("SELECT count(*) FROM event_outbox WHERE tenant_id = %s AND event_type = "
                              "'submission.received'", (tenant,)).fetchone()[0]
    assert [str(r[0]) for r in subs] == [submission_id] and events == 1
    description = await temporal_client.get_workflow_handle(grading_workflow_id(submission_id)).describe()
    assert description.id == grading_workflow_id(submission_id)


async def test_same_key_other_body_is_422_and_no_second_submission(api, bearer, pg_admin_url) -> None:
    tenant = new_tenant()
    headers = {**bearer(tenant), "Idempotency-Key": "k1"}
    exam_id = await create_exam(api, bearer(tenant))
    first = await api.post("/v1/submissions", json=submission_body(exam_id, "a"), headers=headers)
    other = await api.post("/v1/submissions", json=submission_body(exam_id, "b"), headers=headers)
    assert first.status_code == 202 and other.status_code == 422
    assert other.json()["type"].endswith("idempotency-key-reused")
    with psycopg.connect(pg_admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM submissions WHERE tenant_id = %s", (tenant,)).fetchone()[0] == 1


async def test_without_key_external_id_still_dedupes(api, bearer) -> None:
    tenant = new_tenant()
    headers = bearer(tenant)
    exam_id = await create_exam(api, headers)
    body = submission_body(exam_id, "s-ext", external_id="lms-42")
    first, second = [await api.post("/v1/submissions", json=body, headers=headers) for _ in range(2)]
    assert first.status_code == second.status_code == 202
    assert first.json()["submission_id"] == second.json()["submission_id"]
