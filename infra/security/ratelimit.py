"""Per-tenant, per-route-class rate limits: an atomic token bucket in Redis (Lua).

Each ``(tenant, route class)`` owns a bucket of ``amount`` tokens refilled at
``amount / period`` per second, parsed from strings such as ``"60/minute"``. The script reads the
Redis clock, so every API process shares one bucket.

Busy is not down. When the process's Redis pool has no free connection (every connection in use),
the limiter waits up to :data:`BUSY_WAIT_SECONDS` for one and then answers "unavailable" (the API
replies 503 with ``Retry-After``): a busy pool never lets a request through unmetered. When Redis
itself fails (refused, reset, timed out), in-process buckets take over and
:attr:`RateLimiter.degraded` turns true until Redis answers again. Those buckets are kept per
``(tenant, route class)`` for the process's life and mirror the last state Redis reported, so a
tenant that had spent its bucket stays limited through the outage (each process enforces the limit
on its own, so across N API processes the effective limit is at most N times looser).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import limits
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from infra.cache.keys import rate_limit_key
from infra.observability.metrics import count_rate_limit_refusals

logger = logging.getLogger(__name__)

ROUTE_CLASSES = ("submit", "read", "websocket")
BUSY_WAIT_SECONDS = 0.5
"""How long a hit waits for a free Redis connection before it is refused as unavailable."""
BUSY_RETRY_SECONDS = (0.01, 0.1)
"""First and longest pause between two tries for a free connection."""
MAX_LOCAL_BUCKETS = 100_000
"""In-process buckets kept at most (full ones are forgotten first: a full bucket equals no bucket)."""

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
    unavailable: bool = False
    """Refused because the limit could not be checked (no free Redis connection): a 503, not a 429."""

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (IETF draft), plus ``Retry-After`` when refused."""
        if self.unavailable:
            return {"Retry-After": str(self.retry_after)}
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


def _is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says the pool had no free connection (as opposed to Redis failing)."""
    if isinstance(exc, MaxConnectionsError):
        return True
    # BlockingConnectionPool: "No connection available." after its own wait.
    return isinstance(exc, RedisConnectionError) and "no connection available" in str(exc).lower()


class LocalBuckets:
    """In-process token buckets with the same arithmetic as the Lua script (the fallback).

    Args:
        max_buckets: buckets kept at most; beyond it full buckets, then the least recently used, go.

    """

    def __init__(self, max_buckets: int = MAX_LOCAL_BUCKETS) -> None:
        self._buckets: dict[str, tuple[float, float, float]] = {}
        """key -> (tokens, time in ms, time in ms when the bucket is full again)."""
        self._max = max_buckets

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them."""
        now = time.monotonic() * 1000.0
        tokens, ts, _ = self._buckets.get(key, (float(rate.capacity), now, now))
        tokens = min(rate.capacity, tokens + max(0.0, now - ts) * rate.per_ms)
        allowed = tokens >= cost
        retry_ms = 0.0 if allowed else (cost - tokens) / rate.per_ms
        if allowed:
            tokens -= cost
        self._store(key, rate, tokens, now)
        return _decision(rate, allowed, tokens, retry_ms, (rate.capacity - tokens) / rate.per_ms)

    def mirror(self, key: str, rate: Rate, tokens: float) -> None:
        """Record the state Redis reported for ``key``, so a fallback continues from it."""
        self._store(key, rate, min(float(rate.capacity), max(0.0, tokens)), time.monotonic() * 1000.0)

    def _store(self, key: str, rate: Rate, tokens: float, now: float) -> None:
        self._buckets.pop(key, None)  # re-inserted last: the dict's order is least recently used first
        self._buckets[key] = (tokens, now, now + (rate.capacity - tokens) / rate.per_ms)
        if len(self._buckets) > self._max:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, _, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]
        while len(self._buckets) > self._max:
            del self._buckets[next(iter(self._buckets))]


class RateLimiter:
    """Rate limits of every tenant and route class.

    Args:
        redis: a ``redis.asyncio.Redis`` client (``None``: in-process only, degraded).
        rates: limit per route class, e.g. ``{"submit": "60/minute", "read": "600/minute"}``.
        retry_redis_after: seconds to stay on the fallback before trying Redis again.
        busy_wait: seconds a hit waits for a free Redis connection before it is refused as unavailable.

    """

    def __init__(self, redis: Any | None, rates: Mapping[str, str], *, retry_redis_after: float = 5.0,
                 busy_wait: float = BUSY_WAIT_SECONDS) -> None:
        self._redis = redis
        self._rates = {cls: Rate.parse(text) for cls, text in rates.items()}
        self._script = redis.register_script(TOKEN_BUCKET_LUA) if redis is not None else None
        self._local = LocalBuckets()
        self._retry_after = retry_redis_after
        self._busy_wait = busy_wait
        self._down_until = 0.0 if redis is not None else math.inf
        self.busy_refusals = 0
        """Hits refused because no Redis connection became free (metrics, tests)."""

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

    @count_rate_limit_refusals  # gradeflow_rate_limit_refusals_total{route_class,reason}
    async def hit(self, tenant_id: str, route_class: str, cost: int = 1) -> Decision:
        """Count one request of ``tenant_id`` in ``route_class`` and decide whether it passes.

        Returns:
            The decision; ``unavailable`` (refused) when no Redis connection became free within
            ``busy_wait``.

        """
        rate = self._rates[route_class]
        key = rate_limit_key(tenant_id, route_class)
        if self._script is not None and not self.degraded:
            deadline = time.monotonic() + self._busy_wait
            pause = BUSY_RETRY_SECONDS[0]
            while True:
                try:
                    allowed, tokens, retry_ms, reset_ms = await self._script(
                        keys=[key], args=[rate.capacity, repr(rate.per_ms), cost])
                except Exception as exc:  # noqa: BLE001 - busy: wait, then refuse; anything else: fall back
                    if _is_busy(exc):
                        if time.monotonic() + pause < deadline:
                            await asyncio.sleep(pause)
                            pause = min(pause * 2, BUSY_RETRY_SECONDS[1])
                            continue
                        self.busy_refusals += 1
                        return _unavailable(rate)
                    logger.warning("rate limiter: Redis unavailable (%s); using in-process buckets for %.0fs",
                                   type(exc).__name__, self._retry_after)
                    self._down_until = time.monotonic() + self._retry_after
                    break
                self._local.mirror(key, rate, float(tokens))
                return _decision(rate, bool(int(allowed)), float(tokens), float(retry_ms), float(reset_ms))
        return self._local.hit(key, rate, cost)


def _unavailable(rate: Rate) -> Decision:
    return Decision(allowed=False, limit=rate.capacity, remaining=0, reset_seconds=0, retry_after=1,
                    period=max(1, math.ceil(rate.period)), unavailable=True)
