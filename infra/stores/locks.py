"""Distributed lock on Redis: owner token, TTL, renewal, compare-and-delete release.

Built on :class:`redis.asyncio.lock.Lock`, which already does ``SET NX PX`` with a token, a
compare-and-delete Lua release and compare-and-``PEXPIRE`` Lua renewal. This wrapper adds the key
naming, a random owner token per instance (never shared through thread-local storage), an
auto-renew task at ``ttl / 3`` in the context manager, and clear errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError
from redis.exceptions import LockNotOwnedError as RedisLockNotOwnedError

from infra.cache.keys import lock_key

logger = logging.getLogger(__name__)


class LockNotOwnedError(RedisLockNotOwnedError):
    """The lock expired and/or now belongs to another owner; nothing was released or extended."""


class LockAcquireError(LockError):
    """The lock could not be acquired within the timeout."""


class RedisLock:
    """A Redis lock held by one owner token at a time.

    Args:
        redis: Redis client.
        name: lock name; the key is :func:`infra.cache.keys.lock_key` of it.
        ttl: seconds the lock lives unless renewed.
        owner: label of the holder (e.g. worker id), prefixed to the random token.
        acquire_timeout: how long ``async with`` waits for the lock (``None``: forever).
        retry_interval: seconds between attempts while blocking.

    """

    def __init__(self, redis: aioredis.Redis, name: str, *, ttl: float, owner: str | None = None,
                 acquire_timeout: float | None = 10.0, retry_interval: float = 0.05) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.name = name
        self.key = lock_key(name)
        self.ttl = ttl
        self.token = f"{owner}:{uuid.uuid4().hex}" if owner else uuid.uuid4().hex
        """This instance's owner token (the value stored under the key while held)."""
        self.acquire_timeout = acquire_timeout
        self.lost = asyncio.Event()
        """Set when auto-renewal found the lock owned by someone else (or gone)."""
        self._lock = Lock(redis, self.key, timeout=ttl, sleep=retry_interval, thread_local=False)
        self._lock.local.token = self.token.encode()  # every check compares against our own token
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, *, blocking: bool = False, timeout: float | None = None) -> bool:
        """Try to take the lock (``SET NX PX``); with ``blocking``, retry up to ``timeout`` seconds.

        Returns:
            Whether this instance now holds the lock.

        """
        acquired = await self._lock.acquire(blocking=blocking, blocking_timeout=timeout, token=self.token)
        if acquired:
            self.lost.clear()
        return bool(acquired)

    async def release(self) -> None:
        """Delete the key if it still holds our token (atomic compare-and-delete).

        Raises:
            LockNotOwnedError: the lock expired or belongs to another owner (left untouched).

        """
        try:
            await self._lock.do_release(self.token.encode())
        except RedisLockNotOwnedError as exc:
            raise LockNotOwnedError(
                f"lock {self.key!r} is no longer owned by {self.token!r} (expired or taken); not released"
            ) from exc

    async def renew(self) -> None:
        """Reset the TTL to ``ttl`` if we still own the lock (compare-and-``PEXPIRE``).

        Raises:
            LockNotOwnedError: the lock is gone or owned by someone else.

        """
        try:
            await self._lock.do_reacquire()
        except RedisLockNotOwnedError as exc:
            raise LockNotOwnedError(f"lock {self.key!r} is no longer owned by {self.token!r}") from exc

    async def extend(self, seconds: float) -> None:
        """Add ``seconds`` to the remaining TTL if we still own the lock.

        Raises:
            LockNotOwnedError: the lock is gone or owned by someone else.

        """
        try:
            await self._lock.do_extend(seconds, False)
        except RedisLockNotOwnedError as exc:
            raise LockNotOwnedError(f"lock {self.key!r} is no longer owned by {self.token!r}") from exc

    async def owned(self) -> bool:
        """Whether the key currently holds our token."""
        return await self._lock.redis.get(self.key) == self.token

    async def __aenter__(self) -> RedisLock:
        if not await self.acquire(blocking=True, timeout=self.acquire_timeout):
            raise LockAcquireError(f"could not acquire lock {self.key!r} within {self.acquire_timeout}s")
        self._renewer = asyncio.create_task(self._renew_forever(), name=f"lock-renew-{self.name}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        try:
            await self.release()
        except LockNotOwnedError:
            if exc_type is None:
                raise
            logger.warning("lock %s was lost while an error was propagating", self.key)

    async def _renew_forever(self) -> None:
        """Renew every ``ttl / 3`` until cancelled or the lock is lost."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.renew()
            except LockNotOwnedError:
                logger.warning("lock %s lost: renewal found another owner or no key", self.key)
                self.lost.set()
                return
            except Exception as exc:  # noqa: BLE001 - keep trying until the TTL runs out
                logger.warning("lock %s renewal failed: %s", self.key, exc)
