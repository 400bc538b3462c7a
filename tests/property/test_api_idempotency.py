# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Property 23 through the real API: one idempotency key never creates a second resource; the same
key with a different body is a 422; a replay returns the original response."""

from __future__ import annotations

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.api_contract.fixtures import create_exam, new_tenant, submission_body

operations = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from(
    ["Idempotency-Key", "X-Idempotency-Key"])), min_size=1, max_size=8)


@given(ops=operations)
async def test_one_key_one_resource(api, bearer, pg_admin_url, ops) -> None:
    tenant = new_tenant()
    headers = bearer(tenant)
    exam_id = await create_exam(api, headers)
    first_use: dict[int, tuple[int, dict]] = {}
    for key, body_no, header in ops:
        resp = await api.post("/v1/submissions", json=submission_body(exam_id, f"s-{body_no}"),
                              headers={**headers, header: f"key-{key}"})
        if key not in first_use:
            assert resp.status_code == 202 and "idempotent-replayed" not in resp.headers, resp.text
            first_use[key] = (body_no, resp.json())
        elif first_use[key][0] == body_no:
            assert resp.status_code == 202 and resp.headers["idempotent-replayed"] == "true"
            assert resp.json() == first_use[key][1]
        else:
            assert resp.status_code == 422, resp.text
    with psycopg.connect(pg_admin_url) as conn:
        ids = {str(r[0]) for r in conn.execute("SELECT id FROM submissions WHERE tenant_id = %s", (tenant,))}
    assert ids == {body["submission_id"] for _, body in first_use.values()}
