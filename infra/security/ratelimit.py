"""Per-tenant, per-route-class rate limits: an atomic token bucket in Redis (Lua).

Each ``(tenant, route class)`` owns a bucket of ``amount`` tokens refilled at
``amount / period`` per second, parsed from strings such as ``"60/minute"``. The script reads the
Redis clock, so every API process shares one bucket. If Redis fails, an in-process bucket with the
same rules takes over (per process, so the effective limit is looser) and :attr:`RateLimiter.degraded`
turns true until Redis answers again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import limits

from infra.cache.keys import rate_limit_key

logger = logging.getLogger(__name__)

ROUTE_CLASSES = ("submit", "read", "websocket")

TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_ms = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate) + 1000)
return {allowed, tostring(tokens), retry_ms, math.ceil((capacity - tokens) / rate)}
"""
"""KEYS[1] bucket; ARGV capacity, refill rate (tokens per ms), cost. Returns
``{allowed, tokens_left, retry_after_ms, reset_ms}``."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A bucket's shape."""

    capacity: int
    """Burst size and the advertised ``RateLimit-Limit``."""
    period: float
    """Seconds to refill an empty bucket."""

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"60/minute"``, ``"5/second"``, ``"1000/hour"`` (the ``limits`` notation)."""
        item = limits.parse(text)
        return cls(capacity=int(item.amount), period=float(item.get_expiry()))

    @property
    def per_ms(self) -> float:
        """Refill rate in tokens per millisecond."""
        return self.capacity / (self.period * 1000.0)


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one hit on a bucket."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    """Seconds until the bucket is full again."""
    retry_after: int
    """Seconds until the next hit can pass (0 when allowed, else a positive integer)."""
    period: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (IETF draft), plus ``Retry-After`` when refused."""
        out = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
               "RateLimit-Reset": str(self.reset_seconds),
               "RateLimit-Policy": f"{self.limit};w={self.period}"}
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


def _decision(rate: Rate, allowed: bool, tokens: float, retry_ms: float, reset_ms: float) -> Decision:
    return Decision(
        allowed=allowed, limit=rate.capacity, remaining=max(0, math.floor(tokens)),
        reset_seconds=max(0, math.ceil(reset_ms / 1000.0)),
        retry_after=0 if allowed else max(1, math.ceil(retry_ms / 1000.0)),
        period=max(1, math.ceil(rate.period)),
    )


class LocalBuckets:
    """In-process token buckets with the same arithmetic as the Lua script (the fallback)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them."""
        now = time.monotonic() * 1000.0
        tokens, ts = self._buckets.get(key, (float(rate.capacity), now))
        tokens = min(rate.capacity, tokens + max(0.0, now - ts) * rate.per_ms)
        allowed = tokens >= cost
        retry_ms = 0.0 if allowed else (cost - tokens) / rate.per_ms
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        return _decision(rate, allowed, tokens, retry_ms, (rate.capacity - tokens) / rate.per_ms)


class RateLimiter:
    """Rate limits of every tenant and route class.

    Args:
        redis: a ``redis.asyncio.Redis`` client (``None``: in-process only, degraded).
        rates: limit per route class, e.g. ``{"submit": "60/minute", "read": "600/minute"}``.
        retry_redis_after: seconds to stay on the fallback before trying Redis again.

    """

    def __init__(self, redis: Any | None, rates: Mapping[str, str], *, retry_redis_after: float = 5.0) -> None:
        self._redis = redis
        self._rates = {cls: Rate.parse(text) for cls, text in rates.items()}
        self._script = redis.register_script(TOKEN_BUCKET_LUA) if redis is not None else None
        self._local = LocalBuckets()
        self._retry_after = retry_redis_after
        self._down_until = 0.0 if redis is not None else math.inf

    @classmethod
    def from_settings(cls, settings: Any, redis: Any | None) -> RateLimiter:
        """Build from ``Settings.rate_limit_submit/read/websocket``."""
        return cls(redis, {"submit": settings.rate_limit_submit, "read": settings.rate_limit_read,
                           "websocket": settings.rate_limit_websocket})

    @property
    def degraded(self) -> bool:
        """True while limits are enforced in-process because Redis failed."""
        return time.monotonic() < self._down_until

    def rate(self, route_class: str) -> Rate:
        """The configured rate of a route class."""
        return self._rates[route_class]

    async def hit(self, tenant_id: str, route_class: str, cost: int = 1) -> Decision:
        """Count one request of ``tenant_id`` in ``route_class`` and decide whether it passes."""
        rate = self._rates[route_class]
        key = rate_limit_key(tenant_id, route_class)
        if self._script is not None and not self.degraded:
            try:
                allowed, tokens, retry_ms, reset_ms = await self._script(
                    keys=[key], args=[rate.capacity, repr(rate.per_ms), cost])
                return _decision(rate, bool(int(allowed)), float(tokens), float(retry_ms), float(reset_ms))
            except Exception as exc:  # noqa: BLE001 - any Redis failure means: fall back
                logger.warning("rate limiter: Redis unavailable (%s); using in-process buckets for %.0fs",
                               type(exc).__name__, self._retry_after)
                self._down_until = time.monotonic() + self._retry_after
        return self._local.hit(key, rate, cost)
