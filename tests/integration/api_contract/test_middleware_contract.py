"""Auth, idempotency keys and rate limits on a mini app backed by the real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis

from infra.security.ratelimit import RateLimiter
from tests.integration.api_contract.miniapp import bearer, build_app, ensure_tenant


@pytest.fixture
def tenant(pg_admin_url: str, tenant_id: str) -> str:
    ensure_tenant(pg_admin_url, tenant_id)
    return tenant_id


@pytest.fixture
async def client_for(app_settings, pools):
    clients = []

    async def make(limiter=None, calls=None):
        app = build_app(app_settings, pools, limiter, calls if calls is not None else [])
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


# --- auth ---------------------------------------------------------------------------------------

async def test_missing_invalid_expired_tokens_get_401_problems(client_for, app_settings, tenant) -> None:
    client = await client_for()
    cases = [{}, {"Authorization": "Bearer nope"}, bearer(app_settings, tenant, ttl=-600),
             {"Authorization": "Basic YTpi"}]
    for headers in cases:
        resp = await client.get("/v1/things", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.json()["status"] == 401
    assert (await client.get("/v1/things", headers=bearer(app_settings, tenant))).json() == {"tenant": tenant}


async def test_role_not_allowed_is_403(client_for, app_settings, tenant) -> None:
    client = await client_for()
    assert (await client.get("/v1/admin", headers=bearer(app_settings, tenant, "reviewer"))).status_code == 403
    assert (await client.get("/v1/admin", headers=bearer(app_settings, tenant, "admin"))).status_code == 200


# --- idempotency --------------------------------------------------------------------------------

async def test_replay_returns_the_stored_response(client_for, app_settings, tenant) -> None:
    calls: list[dict] = []
    client = await client_for(calls=calls)
    headers = {**bearer(app_settings, tenant), "Idempotency-Key": "k-" + uuid.uuid4().hex}
    first = await client.post("/v1/things", json={"a": 1, "b": 2}, headers=headers)
    again = await client.post("/v1/things", content=b'{"b": 2,  "a": 1}',
                              headers={**headers, "content-type": "application/json"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["location"] == "/v1/things/x"
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert len(calls) == 1


async def test_same_key_other_body_is_422_and_x_header_is_accepted(client_for, app_settings, tenant) -> None:
    calls: list[dict] = []
    client = await client_for(calls=calls)
    headers = {**bearer(app_settings, tenant), "X-Idempotency-Key": uuid.uuid4().hex}
    assert (await client.post("/v1/things", json={"a": 1}, headers=headers)).status_code == 201
    resp = await client.post("/v1/things", json={"a": 2}, headers=headers)
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["errors"][0]["field"] == "body"
    assert len(calls) == 1


async def test_key_too_long_is_422(client_for, app_settings, tenant) -> None:
    client = await client_for()
    headers = {**bearer(app_settings, tenant), "Idempotency-Key": "x" * 256}
    resp = await client.post("/v1/things", json={}, headers=headers)
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "Idempotency-Key"
    ok = await client.post("/v1/things", json={}, headers={**headers, "Idempotency-Key": "x" * 255})
    assert ok.status_code == 201


async def test_in_flight_is_409_with_retry_after(client_for, app_settings, tenant) -> None:
    calls: list[dict] = []
    client = await client_for(calls=calls)
    headers = {**bearer(app_settings, tenant), "Idempotency-Key": uuid.uuid4().hex}
    slow = asyncio.create_task(client.post("/v1/things", json={"sleep": 0.6}, headers=headers))
    await asyncio.sleep(0.2)
    busy = await client.post("/v1/things", json={"sleep": 0.6}, headers=headers)
    assert busy.status_code == 409 and int(busy.headers["retry-after"]) >= 1
    assert (await slow).status_code == 201
    assert (await client.post("/v1/things", json={"sleep": 0.6}, headers=headers)).headers[
        "idempotent-replayed"] == "true"
    assert len(calls) == 1


async def test_5xx_is_not_stored_but_4xx_is(client_for, app_settings, tenant) -> None:
    calls: list[dict] = []
    client = await client_for(calls=calls)
    headers = {**bearer(app_settings, tenant), "Idempotency-Key": uuid.uuid4().hex}
    for _ in range(2):
        assert (await client.post("/v1/things", json={"status": 503}, headers=headers)).status_code == 503
    assert len(calls) == 2
    headers["Idempotency-Key"] = uuid.uuid4().hex
    for _ in range(2):
        assert (await client.post("/v1/things", json={"status": 409}, headers=headers)).status_code == 409
    assert len(calls) == 3


async def test_keys_are_scoped_to_tenant_and_caller(client_for, app_settings, tenant, pg_admin_url) -> None:
    other = f"t-{uuid.uuid4().hex[:12]}"
    ensure_tenant(pg_admin_url, other)
    calls: list[dict] = []
    client = await client_for(calls=calls)
    key = {"Idempotency-Key": "shared-key"}
    for headers in (bearer(app_settings, tenant), bearer(app_settings, tenant, sub="caller-2"),
                    bearer(app_settings, other)):
        resp = await client.post("/v1/things", json={"a": 1}, headers={**headers, **key})
        assert resp.status_code == 201 and "idempotent-replayed" not in resp.headers
    assert len(calls) == 3


async def test_expired_and_abandoned_keys_can_be_reused(client_for, app_settings, tenant, pg_admin_url) -> None:
    calls: list[dict] = []
    client = await client_for(calls=calls)
    headers = {**bearer(app_settings, tenant), "Idempotency-Key": uuid.uuid4().hex}
    await client.post("/v1/things", json={"a": 1}, headers=headers)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("UPDATE idempotency_cache SET expires_at = now() - interval '1 second' "
                     "WHERE tenant_id = %s", (tenant,))
    resp = await client.post("/v1/things", json={"a": 2}, headers=headers)  # expired: any body
    assert resp.status_code == 201 and "idempotent-replayed" not in resp.headers
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:  # a crashed first attempt
        conn.execute("UPDATE idempotency_cache SET state = 'in_flight', created_at = now() - interval '1 hour' "
                     "WHERE tenant_id = %s", (tenant,))
    resp = await client.post("/v1/things", json={"a": 2}, headers=headers)
    assert resp.status_code == 201 and len(calls) == 3


# --- rate limits --------------------------------------------------------------------------------

async def test_over_the_limit_is_429_with_headers(client_for, app_settings, tenant, pools) -> None:
    limiter = RateLimiter(pools.redis, {"read": "3/minute", "submit": "2/minute", "websocket": "1/minute"})
    client = await client_for(limiter)
    headers = bearer(app_settings, tenant)
    responses = [await client.get("/v1/things", headers=headers) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    refused = responses[-1]
    assert int(refused.headers["retry-after"]) >= 1 and refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["content-type"] == "application/problem+json" and refused.json()["status"] == 429
    other = f"t-{uuid.uuid4().hex[:12]}"
    assert (await client.get("/v1/things", headers=bearer(app_settings, other))).status_code == 200
    assert (await client.post("/v1/things", json={}, headers=headers)).status_code == 201  # own class
    for _ in range(5):
        assert (await client.get("/v1/health")).status_code == 200  # never limited


async def test_redis_down_falls_back_in_process(client_for, app_settings, tenant) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    limiter = RateLimiter(dead, {"read": "2/minute", "submit": "2/minute", "websocket": "1/minute"})
    client = await client_for(limiter)
    headers = bearer(app_settings, tenant)
    codes = [(await client.get("/v1/things", headers=headers)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert limiter.degraded and (await client.get("/v1/health")).json() == {"status": "degraded"}
    await dead.aclose()
