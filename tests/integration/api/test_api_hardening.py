# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Issue 9, part B, on the real app and real services: tenants cannot starve each other, the server
trusts no client-chosen header, and nothing it logs carries a token.

- A busy Redis pool never loosens the rate limit (busy is refused with 503, not waved through).
- With Redis down the in-process buckets continue from what Redis last said, per tenant.
- Anonymous limits key on the peer address unless the peer is a configured trusted proxy.
- Readiness checks its dependencies at most once a second, one check at a time.
- The access log never carries a bearer token; the Host header never steers a redirect.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from websockets.asyncio.client import connect

from infra.cache.keys import rate_limit_key
from infra.security.ratelimit import RateLimiter
from infra.security.tokens import mint_token
from tests.integration.api.server import running_server
from tests.integration.api.tcp_proxy import TcpProxy
from tests.integration.api_contract.fixtures import new_tenant

LIMIT = 5


def _app(settings: Any, temporal_client: Any, task_queue: str) -> Any:
    from api.app import create_app

    return create_app(settings, temporal_client=temporal_client,
                      grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})


def _client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=200))


async def test_exhausted_redis_pool_never_lets_requests_past_the_limit(app_settings, temporal_client, task_queue,
                                                                       bearer) -> None:
    settings = app_settings.model_copy(update={"rate_limit_read": f"{LIMIT}/minute"})
    app = _app(settings, temporal_client, task_queue)
    async with running_server(app) as url, _client(url) as http:
        spent, fresh = new_tenant(), new_tenant()
        for _ in range(LIMIT):
            assert (await http.get("/v1/exams", headers=bearer(spent))).status_code == 200
        pool = app.state.pools.redis.connection_pool
        held = []
        while len(pool._in_use_connections) < pool.max_connections:  # every connection busy
            held.append(await pool.get_connection())
        try:
            calls = [bearer(spent)] * 50 + [bearer(fresh)] * 50
            responses = await asyncio.gather(*(http.get("/v1/exams", headers=h) for h in calls))
        finally:
            for conn in held:
                await pool.release(conn)
        codes = [r.status_code for r in responses]
        passed = {"spent": codes[:50].count(200), "fresh": codes[50:].count(200)}
        assert passed == {"spent": 0, "fresh": 0}, codes  # busy is never "let it through"
        assert set(codes) <= {429, 503}, codes
        busy = [r for r in responses if r.status_code == 503]
        assert busy and all(r.headers["retry-after"] == "1" for r in busy)
        assert busy[0].headers["content-type"] == "application/problem+json"
        assert not app.state.rate_limiter.degraded  # busy is not down
        # the pool is free again: the spent bucket is still spent, the fresh one still full
        assert (await http.get("/v1/exams", headers=bearer(spent))).status_code == 429
        assert (await http.get("/v1/exams", headers=bearer(fresh))).status_code == 200


async def test_redis_down_fallback_continues_each_tenants_bucket(redis_url) -> None:
    target = urlsplit(redis_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        redis = aioredis.Redis(host="127.0.0.1", port=proxy.port, socket_connect_timeout=1,
                               retry=Retry(NoBackoff(), 0))
        limiter = RateLimiter(redis, {"read": "3/minute"})
        spent, half, fresh = new_tenant(), new_tenant(), new_tenant()
        assert [(await limiter.hit(spent, "read")).allowed for _ in range(3)] == [True] * 3
        assert (await limiter.hit(half, "read")).allowed
        await proxy.cut()  # Redis down
        try:
            assert not (await limiter.hit(spent, "read")).allowed
            assert limiter.degraded
            assert [(await limiter.hit(half, "read")).allowed for _ in range(3)] == [True, True, False]
            assert [(await limiter.hit(fresh, "read")).allowed for _ in range(4)] == [True] * 3 + [False]
            assert not (await limiter.hit(spent, "read")).allowed  # the bucket persists across requests
        finally:
            await redis.aclose()


async def test_anonymous_limits_key_on_the_peer_unless_it_is_a_trusted_proxy(app_settings, temporal_client,
                                                                            task_queue, pools) -> None:
    anon = rate_limit_key("anon:127.0.0.1", "read")
    for trusted, expected in (("", [401, 401, 401, 429]), ("127.0.0.1", [401, 401, 401, 401])):
        settings = app_settings.model_copy(update={"rate_limit_read": "3/minute", "trusted_proxies": trusted,
                                                   "log_level": "WARNING"})
        await pools.redis.delete(anon)
        app = _app(settings, temporal_client, task_queue)
        async with running_server(app, settings=settings) as url, _client(url) as http:
            codes = [(await http.get("/v1/exams", headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
                     for i in range(4)]
        assert codes == expected, (trusted, codes)
    await pools.redis.delete(anon)


async def test_readiness_checks_at_most_once_a_second_one_at_a_time(app_settings, temporal_client,
                                                                    task_queue) -> None:
    app = _app(app_settings, temporal_client, task_queue)
    async with running_server(app) as url, _client(url) as http:
        pools = app.state.pools
        real_health, calls = pools.health, []

        async def counted() -> dict[str, str]:
            calls.append(time.monotonic())
            return await real_health()

        pools.health = counted
        started = time.monotonic()
        for _ in range(2):
            responses = await asyncio.gather(*(http.get("/v1/health/ready") for _ in range(100)))
            assert {r.status_code for r in responses} == {200}
            assert {r.json()["status"] for r in responses} == {"ok"}
        elapsed = time.monotonic() - started
        # at most one check per started second (plus the first), however many callers there are
        assert 1 <= len(calls) <= math.ceil(elapsed) + 1, (len(calls), elapsed)


async def test_access_log_carries_no_token_and_host_never_steers_a_redirect(app_settings, temporal_client,
                                                                           task_queue, tenant_id) -> None:
    settings = app_settings.model_copy(update={"log_level": "INFO"})
    token = mint_token(app_settings, tenant=tenant_id, roles=["admin"])
    app = _app(settings, temporal_client, task_queue)
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    async with running_server(app, settings=settings) as url, _client(url) as http:
        capture = Capture()
        for name in ("uvicorn.access", "uvicorn.error"):
            logging.getLogger(name).addHandler(capture)
        try:
            await http.get(f"/v1/exams?token={token}&page_size=5", headers={"Authorization": f"Bearer {token}"})
            await http.get("/v1/exams", headers={"Authorization": f"Bearer {token}"})
            ws = url.replace("http://", "ws://")
            async with connect(f"{ws}/v1/ws/exams/00000000-0000-0000-0000-000000000000?token={token}") as feed:
                with pytest.raises(Exception):  # noqa: B017 - closed with 4404
                    await asyncio.wait_for(feed.recv(), 10)
            redirected = await http.get("/v1/exams/", headers={"Host": "evil.example",
                                                               "Authorization": f"Bearer {token}"})
        finally:
            for name in ("uvicorn.access", "uvicorn.error"):
                logging.getLogger(name).removeHandler(capture)
    assert redirected.status_code == 404 and "location" not in redirected.headers
    lines = "\n".join(records)
    assert "GET /v1/exams?token=[redacted]&page_size=5" in lines, lines
    assert "WebSocket /v1/ws/exams/" in lines and "token=[redacted]" in lines
    assert token not in lines and token.split(".")[2] not in lines
