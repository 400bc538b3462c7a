"""The in-process token bucket (the fallback when Redis is down)."""

from __future__ import annotations

import pytest

from infra.security.ratelimit import LocalBuckets, Rate, RateLimiter


def test_rate_parsing() -> None:
    assert Rate.parse("60/minute") == Rate(60, 60.0)
    assert Rate.parse("5/second").per_ms == pytest.approx(0.005)


def test_bucket_allows_capacity_then_refuses_with_positive_retry_after() -> None:
    buckets, rate = LocalBuckets(), Rate(3, 60.0)
    decisions = [buckets.hit("k", rate) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[-1]
    assert refused.retry_after >= 1 and refused.headers()["Retry-After"] == str(refused.retry_after)
    assert buckets.hit("other", rate).allowed


async def test_limiter_without_redis_is_degraded_but_enforces() -> None:
    limiter = RateLimiter(None, {"read": "2/minute"})
    assert limiter.degraded
    results = [(await limiter.hit("t", "read")).allowed for _ in range(3)]
    assert results == [True, True, False]
