"""Redis hot copies: cache-aside reads with a PostgreSQL fallback, write-through, invalidation.

- :meth:`Cache.read_through` reads Redis first; on a miss it calls the loader (PostgreSQL) and
  back-fills; with Redis unreachable it serves from the loader (``database-degraded``), never fails.
- :func:`write_through` writes the cache, then the database; if the database write fails the cache
  is restored to its exact previous state (value and TTL, via ``DUMP``/``RESTORE``) or deleted.
- :meth:`Cache.set_if_newer` / :meth:`Cache.drop_if_older` guard versioned copies (JSON objects with a
  ``version``): an older copy never overwrites a newer one, and a repair after a committed change
  drops only a copy older than that change.
- :meth:`Cache.invalidate` deletes a key and broadcasts ``{tenant_id, key, origin}`` on
  :data:`infra.cache.keys.INVALIDATION_CHANNEL`; :class:`InvalidationListener` delivers those to workers'
  in-process caches.

Keys must carry their tenant's hash tag (``{tenant_id}``, see :mod:`infra.cache.keys`) for invalidation,
so one tenant can never broadcast an invalidation of another tenant's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from infra.cache.keys import INVALIDATION_CHANNEL
from infra.observability.metrics import record_cache_lookup

logger = logging.getLogger(__name__)

T = TypeVar("T")
Source = Literal["cache", "database", "database-degraded"]
REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, ConnectionError, TimeoutError,
)
"""Errors that mean "Redis is unreachable" (reads degrade to the database)."""
LEASE_MS = 10_000
"""Lifetime of a back-fill lease: longer than any sane database read."""
FILL_IF_LEASED_LUA = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""
"""Back-fill ``KEYS[1]`` only while our lease ``KEYS[2]`` is still ours (no write landed meanwhile)."""
CACHED_VERSION_LUA = """
local function cached_version(key)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' then return tonumber(doc['version']) end
  return nil
end
"""
SET_IF_NEWER_LUA = CACHED_VERSION_LUA + """
local v = cached_version(KEYS[1])
if v and v > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
redis.call('DEL', KEYS[2])
return 1
"""
"""Write ``KEYS[1]`` unless the copy there has a higher ``version``; void any back-fill in flight."""
DROP_IF_OLDER_LUA = CACHED_VERSION_LUA + """
local v = cached_version(KEYS[1])
if v and v >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""
"""Delete ``KEYS[1]`` (and its lease) unless the copy there is at least ``ARGV[1]``'s version."""


def lease_key(key: str) -> str:
    """Key of the back-fill lease of ``key`` (same hash tag, so the Lua script stays in one slot)."""
    return f"{key}:lease"


@dataclass(frozen=True)
class Invalidation:
    """One invalidation broadcast."""

    tenant_id: str
    """Tenant owning the key."""
    key: str
    """The invalidated Redis key (also the in-process cache key of workers)."""
    origin: str
    """Process that sent it (``host:pid`` unless given)."""


def _default_origin() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Cache:
    """JSON values in Redis with a TTL.

    Args:
        redis: Redis client (``decode_responses=True``, e.g. ``PoolManager.redis``).
        ttl_seconds: TTL of every value written.
        origin: name put into invalidation messages.
        breaker_seconds: after Redis fails, reads skip it for this long (degraded reads stay fast
            instead of paying the client's connect retries on every request).

    """

    def __init__(self, redis: aioredis.Redis, *, ttl_seconds: int, origin: str | None = None,
                 breaker_seconds: float = 5.0) -> None:
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self.origin = origin or _default_origin()
        self.breaker_seconds = breaker_seconds
        self._down_until = 0.0

    def _redis_down(self, key: str, action: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.breaker_seconds
        logger.warning("cache %s of %s failed (%s); reads use the database for %.1fs",
                       action, key, exc, self.breaker_seconds)

    async def get_json(self, key: str) -> Any | None:
        """Return the decoded value, or ``None`` on a miss (Redis errors propagate)."""
        raw = await self.redis.get(key)
        return None if raw is None else json.loads(raw)

    async def set_json(self, key: str, value: Any) -> None:
        """Store ``value`` as JSON with the TTL."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, self._dumps(value), ex=self.ttl_seconds)
            pipe.delete(lease_key(key))
            await pipe.execute()

    async def set_if_newer(self, key: str, value: dict[str, Any]) -> bool:
        """Store a versioned copy unless Redis holds a newer one; tell whether it was written.

        ``value["version"]`` is the row version the copy was read at. A copy with a higher version
        wins; an unversioned copy (or none) is replaced. Any back-fill in flight is voided.
        """
        written = await self.redis.eval(SET_IF_NEWER_LUA, 2, key, lease_key(key), self._dumps(value),
                                        int(value.get("version") or 0), self.ttl_seconds)
        return bool(written)

    async def drop_if_older(self, key: str, version: int) -> bool:
        """Delete the copy at ``key`` unless it is at least ``version``; tell whether it was dropped.

        The repair of a change committed at ``version`` whose copy could not be refreshed (Redis was
        down): the next read misses and back-fills from PostgreSQL. A back-fill in flight is voided.
        """
        return bool(await self.redis.eval(DROP_IF_OLDER_LUA, 2, key, lease_key(key), int(version)))

    @staticmethod
    def _dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), default=str)

    async def delete(self, key: str) -> None:
        """Remove ``key`` (and void any back-fill in flight)."""
        await self.redis.delete(key, lease_key(key))

    async def read_through(self, key: str, loader: Callable[[], Awaitable[T | None]]) -> tuple[T | None, Source]:
        """Read Redis first; on a miss load from the database and back-fill.

        Args:
            key: Redis key.
            loader: async database read; ``None`` means "not found" (never cached).

        Returns:
            ``(value, source)`` with source ``cache``, ``database`` or ``database-degraded``
            (Redis unreachable: served from the database without failing). Each call counts as a hit
            or a miss of cache layer ``redis`` (``cache_hits_total`` / ``cache_misses_total``).

        """
        if time.monotonic() < self._down_until:
            record_cache_lookup("redis", hit=False)
            return await loader(), "database-degraded"
        try:
            cached = await self.get_json(key)
        except REDIS_DOWN_ERRORS as exc:
            self._redis_down(key, "read", exc)
            record_cache_lookup("redis", hit=False)
            return await loader(), "database-degraded"
        record_cache_lookup("redis", hit=cached is not None)
        if cached is not None:
            return cached, "cache"
        # A lease guards the back-fill: a write or invalidation that lands while we read the
        # database deletes the lease, so our (possibly stale) copy is not written over it.
        lease = uuid.uuid4().hex
        try:
            await self.redis.set(lease_key(key), lease, px=LEASE_MS)
        except REDIS_DOWN_ERRORS as exc:
            self._redis_down(key, "lease", exc)
            return await loader(), "database-degraded"
        value = await loader()
        if value is None:
            return None, "database"
        try:
            await self.redis.eval(FILL_IF_LEASED_LUA, 2, key, lease_key(key), lease, self._dumps(value),
                                  self.ttl_seconds)
        except REDIS_DOWN_ERRORS as exc:
            self._redis_down(key, "back-fill", exc)
            return value, "database-degraded"
        return value, "database"

    async def invalidate(self, tenant_id: str, key: str) -> int:
        """Delete ``key`` and broadcast the invalidation; return how many subscribers received it.

        Raises:
            ValueError: ``key`` does not belong to ``tenant_id`` (no ``{tenant_id}`` hash tag).

        """
        if f"{{{tenant_id}}}" not in key:
            raise ValueError(f"key {key!r} does not belong to tenant {tenant_id!r}")
        message = json.dumps({"tenant_id": tenant_id, "key": key, "origin": self.origin})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key, lease_key(key))
            pipe.publish(INVALIDATION_CHANNEL, message)
            _, receivers = await pipe.execute()
        return int(receivers)

    async def snapshot(self, key: str) -> tuple[bytes | None, int]:
        """Capture a key's exact state: ``(DUMP payload or None, PTTL in ms, 0 = no expiry)``.

        One round trip, not MULTI: a MULTI reply would be decoded and corrupt the binary payload.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.dump(key)
            pipe.pttl(key)
            dumped, pttl = await pipe.execute()
        if dumped is None or pttl == -2:
            return None, 0
        return dumped, max(int(pttl), 0)

    async def restore(self, key: str, state: tuple[bytes | None, int]) -> None:
        """Put ``key`` back to a :meth:`snapshot` (delete it when it did not exist)."""
        dumped, pttl = state
        if dumped is None:
            await self.redis.delete(key)
        else:
            await self.redis.restore(key, pttl, dumped, replace=True)


async def write_through(cache: Cache, key: str, value: Any, db_write: Callable[[], Awaitable[T]]) -> T:
    """Write the cache, then the database; compensate the cache if the database write fails.

    Order: snapshot the previous cache state, write the cache, run ``db_write``. If ``db_write``
    raises, the cache is restored to the snapshot (or the key deleted if there was none) and the
    error re-raised, so the state equals the state before. If Redis is unreachable the error
    propagates before the database is touched (nothing changed).

    Args:
        cache: the cache.
        key: Redis key.
        value: JSON value to cache; it must be what ``db_write`` stores.
        db_write: async database write (its own transaction).

    Returns:
        Whatever ``db_write`` returns.

    """
    previous = await cache.snapshot(key)
    await cache.set_json(key, value)
    try:
        return await db_write()
    except BaseException as exc:
        try:
            await cache.restore(key, previous)
        except Exception as comp_exc:  # noqa: BLE001 - reported on the original error
            logger.error("cache compensation of %s failed: %s; deleting it", key, comp_exc)
            exc.add_note(f"cache compensation of {key} failed: {comp_exc!r}")
            with contextlib.suppress(Exception):
                await cache.redis.delete(key)
        raise


OnInvalidate = Callable[[Invalidation], Awaitable[None] | None]


class InvalidationListener:
    """Subscribes to the invalidation channel and calls ``on_invalidate`` for each message.

    Use as ``async with InvalidationListener(redis, callback):`` or ``start()``/``stop()``;
    ``start`` returns once the subscription is active. The listener reconnects after Redis errors
    (messages sent while disconnected are lost: pub/sub is at most once; keep local TTLs short).

    Args:
        redis: Redis client.
        on_invalidate: sync or async callback.

    """

    def __init__(self, redis: aioredis.Redis, on_invalidate: OnInvalidate) -> None:
        self.redis = redis
        self.on_invalidate = on_invalidate
        self.subscribed = asyncio.Event()
        """Set while subscribed."""
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening and wait until subscribed."""
        self._task = asyncio.create_task(self._run(), name="invalidation-listener")
        waiter = asyncio.ensure_future(self.subscribed.wait())
        done, _ = await asyncio.wait([waiter, self._task], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task in done:
            await self._task  # raises what ended it
        if not self.subscribed.is_set():
            raise TimeoutError(f"not subscribed to {INVALIDATION_CHANNEL} within {timeout}s")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> InvalidationListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                self.subscribed.set()
                delay = 0.2
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._dispatch(message["data"])
            except REDIS_DOWN_ERRORS as exc:
                logger.warning("invalidation listener lost Redis (%s); retrying in %.1fs", exc, delay)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _dispatch(self, data: str | bytes) -> None:
        try:
            body = json.loads(data)
            event = Invalidation(str(body["tenant_id"]), str(body["key"]), str(body.get("origin", "")))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring malformed invalidation %r: %s", data, exc)
            return
        try:
            result = self.on_invalidate(event)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 - one bad callback must not stop the listener
            logger.exception("invalidation callback failed for %s", event.key)
