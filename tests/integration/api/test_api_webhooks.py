"""``/v1/webhooks`` through the real app: admins register, list, read, rotate, enable and delete endpoints;
the secret is shown on creation and rotation only; deliveries page newest first; tenants never see each
other's endpoints; bad input is problem+json naming the field."""

from __future__ import annotations

import httpx

from infra.webhooks.fanout import webhook_fanout
from tests.integration.infra.webhooks.support import deliveries, emit

PROBLEM = "application/problem+json"
HOOK = {"url": "http://127.0.0.1:9/hooks", "event_types": ["submission.graded", "submission.reviewed"],
        "description": "LMS sync"}


async def test_admins_manage_endpoints_and_secrets_are_shown_once(client: httpx.AsyncClient, auth_headers,
                                                                  tenant_id, new_tenant) -> None:
    admin = auth_headers(tenant_id)
    created = await client.post("/v1/webhooks", json=HOOK, headers=admin)
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert created.headers["location"] == f"/v1/webhooks/{hook['id']}"
    assert (hook["url"], hook["event_types"], hook["status"], hook["description"]) == (
        HOOK["url"], ["submission.graded", "submission.reviewed"], "active", "LMS sync")

    listed = await client.get("/v1/webhooks", headers=admin)
    assert listed.status_code == 200 and [h["id"] for h in listed.json()["items"]] == [hook["id"]]
    shown = await client.get(f"/v1/webhooks/{hook['id'].upper()}", headers=admin)
    assert shown.status_code == 200 and shown.json()["id"] == hook["id"]
    for response in (listed, shown):
        assert '"secret"' not in response.text and "whsec_" not in response.text

    rotated = await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != hook["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None
    assert "whsec_" not in (await client.get("/v1/webhooks", headers=admin)).text

    enabled = await client.post(f"/v1/webhooks/{hook['id']}/enable", headers=admin)
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"

    # Another tenant's admin, a reviewer, a submitter: not found / forbidden.
    other = auth_headers(new_tenant())
    assert (await client.get("/v1/webhooks", headers=other)).json()["items"] == []
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/rotate-secret"), ("GET", "/deliveries")):
        response = await client.request(method, f"/v1/webhooks/{hook['id']}{path}", headers=other)
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM, response.text
    for role in ("reviewer", "submitter"):
        response = await client.post("/v1/webhooks", json=HOOK, headers=auth_headers(tenant_id, roles=(role,)))
        assert response.status_code == 403 and response.headers["content-type"] == PROBLEM
        assert (await client.get("/v1/webhooks", headers=auth_headers(tenant_id, roles=(role,)))).status_code == 403

    deleted = await client.delete(f"/v1/webhooks/{hook['id']}", headers=admin)
    assert deleted.status_code == 204
    assert (await client.get(f"/v1/webhooks/{hook['id']}", headers=admin)).status_code == 404
    assert (await client.get("/v1/webhooks", headers=admin)).json()["items"] == []


async def test_bad_input_is_a_problem_naming_the_field(client: httpx.AsyncClient, auth_headers, tenant_id) -> None:
    admin = auth_headers(tenant_id)
    cases = [({**HOOK, "url": "ftp://example.com/x"}, "url"),
             ({**HOOK, "url": "http://user:pw@example.com/x"}, "url"),
             ({**HOOK, "url": "not a url"}, "url"),
             ({**HOOK, "url": ""}, "url"),
             ({**HOOK, "event_types": ["submission.exploded"]}, "event_types"),
             ({**HOOK, "event_types": []}, "event_types"),
             ({"event_types": ["*"]}, "url")]
    for body, field in cases:
        response = await client.post("/v1/webhooks", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert [e["field"] for e in response.json()["errors"]] == [field], response.text
    bad_id = await client.get("/v1/webhooks/not-a-uuid/deliveries", headers=admin)
    assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["field"] == "endpoint_id"
    assert (await client.get("/v1/webhooks", headers=admin)).json()["items"] == []


async def test_deliveries_page_newest_first_with_their_state(client: httpx.AsyncClient, auth_headers, tenant_id,
                                                              pools) -> None:
    admin = auth_headers(tenant_id)
    hook = (await client.post("/v1/webhooks", json={**HOOK, "event_types": ["*"]}, headers=admin)).json()
    events = await emit(pools, tenant_id, 5)
    fanout = webhook_fanout(pools)
    for event in events:
        await fanout(event)
    rows = await deliveries(pools, tenant_id)
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]

    seen: list[dict] = []
    cursor = None
    while True:
        params = {"page_size": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", params=params, headers=admin)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        seen.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [d["event_id"] for d in seen] == [e.event_id for e in reversed(events)]
    first = seen[0]
    assert (first["event_type"], first["status"], first["attempts"], first["last_status_code"]) == (
        "submission.graded", "pending", 0, None)
    assert first["next_attempt_at"] is not None and first["created_at"] is not None
    none_delivered = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "delivered"},
                                      headers=admin)
    assert none_delivered.json() == {"items": [], "next_cursor": None}
    bad = await client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "lost"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
