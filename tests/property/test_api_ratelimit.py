# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Property 14: over the limit → 429 with a positive integer Retry-After (API and Redis bucket)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.security.ratelimit import RateLimiter
from tests.integration.api.server import serve_app
from tests.integration.api_contract.fixtures import new_tenant

READ_LIMIT = 5


@pytest.fixture
async def limited_api(app_settings, temporal_client, task_queue):
    settings = app_settings.model_copy(update={"rate_limit_read": f"{READ_LIMIT}/minute",
                                               "rate_limit_submit": "3/minute"})
    async with serve_app(settings, temporal_client, task_queue) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


@given(hits=st.integers(1, 12), path=st.sampled_from(["/v1/submissions", "/v1/exams"]))
async def test_over_the_limit_is_429_with_positive_integer_retry_after(limited_api, bearer, hits, path) -> None:
    headers = bearer(new_tenant())
    responses = [await limited_api.get(path, headers=headers) for _ in range(hits)]
    codes = [r.status_code for r in responses]
    assert codes == [200] * min(hits, READ_LIMIT) + [429] * max(0, hits - READ_LIMIT)
    for resp in responses:
        assert resp.headers["ratelimit-limit"] == str(READ_LIMIT)
        assert 0 <= int(resp.headers["ratelimit-remaining"]) < READ_LIMIT
    for refused in responses[READ_LIMIT:]:
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 429
    for _ in range(3):  # health is never limited
        assert (await limited_api.get("/v1/health")).status_code == 200


@given(capacity=st.integers(1, 20), period=st.sampled_from(["minute", "hour"]), hits=st.integers(1, 30))
async def test_redis_bucket_admits_exactly_capacity(pools, capacity, period, hits) -> None:
    limiter = RateLimiter(pools.redis, {"read": f"{capacity}/{period}"})
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    decisions = [await limiter.hit(tenant, "read") for _ in range(hits)]
    assert [d.allowed for d in decisions] == [True] * min(hits, capacity) + [False] * max(0, hits - capacity)
    assert all(d.retry_after >= 1 and isinstance(d.retry_after, int) for d in decisions if not d.allowed)
    assert not limiter.degraded
