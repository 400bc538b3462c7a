"""One writer per submission: the Redis lock ``lock:submission:{id}`` plus the version fence.

Every change of a submission's grades (the grading's persist, reviewer scores applied by the
workflow, the review saga and its compensation, an accepted regrade request) runs inside
:func:`submission_writer` and checks the submission's row version with :func:`check_version` in
its transaction (the row locked ``FOR UPDATE``).

- The lock (:class:`infra.stores.locks.RedisLock`, TTL with renewal at ``ttl / 3``) serialises
  writers: a second writer waits up to ``wait`` seconds, then gets :class:`SubmissionBusyError`
  (retryable: an activity retries it, the API answers 409).
- The version fence is what guarantees correctness: a writer states the version it read; a
  submission at another version refuses the write with :class:`VersionConflictError` and nothing
  is written. A stale holder (its lock expired, or it read an older version) cannot overwrite a
  newer result.
- Redis down: the lock is best-effort. A writer retries an unreachable Redis for ``outage`` seconds
  (bounded by time), then writes WITHOUT the lock (logged as a warning): PostgreSQL is the truth and
  the fence still refuses every stale write, so grading goes on while Redis is down. The fence is
  never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from infra.cache.keys import submission_lock_name
from infra.db.pools import PoolClosedError, PoolManager
from infra.events.outbox import EXISTING_EVENT_SQL
from infra.stores.locks import LockAcquireError, LockNotOwnedError, RedisLock

logger = logging.getLogger(__name__)

LOCK_VERSION_SQL = "SELECT status, version FROM submissions WHERE id = %s FOR UPDATE"
RETRY_PAUSE = 0.1
"""Seconds between attempts to reach an unreachable Redis."""


class SubmissionBusyError(RuntimeError):
    """Another writer held the submission's lock for longer than this writer would wait (retryable)."""


class VersionConflictError(RuntimeError):
    """The submission is not at the version the writer read: a newer change exists; nothing was written."""

    def __init__(self, submission_id: str, expected: int, found: int | None) -> None:
        super().__init__(f"submission {submission_id} is at version {found}, not {expected}: "
                         "a newer change exists; this write was refused")
        self.submission_id = submission_id
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class WriterOptions:
    """How :func:`submission_writer` holds the lock (``GRADEFLOW_SUBMISSION_LOCK_*`` settings)."""

    ttl: float = 30.0
    """Lock TTL in seconds (renewed every ``ttl / 3`` while held)."""
    wait: float = 10.0
    """Seconds to wait for another holder before :class:`SubmissionBusyError`."""
    outage: float = 2.0
    """Seconds to keep retrying an unreachable Redis before running unlocked (fenced)."""

    @classmethod
    def from_settings(cls, settings: Any) -> WriterOptions:
        """The options of :class:`infra.settings.Settings` (defaults for what it lacks)."""
        return cls(ttl=float(getattr(settings, "submission_lock_ttl", cls.ttl)),
                   wait=float(getattr(settings, "submission_lock_wait", cls.wait)),
                   outage=float(getattr(settings, "submission_lock_outage", cls.outage)))


def writer_for(pools: PoolManager, submission_id: str, options: WriterOptions, *,
               owner: str | None = None) -> contextlib.AbstractAsyncContextManager[RedisLock | None]:
    """:func:`submission_writer` on the pool manager's Redis (unlocked when it has none)."""
    try:
        redis: aioredis.Redis | None = pools.redis
    except PoolClosedError:
        redis = None
    return submission_writer(redis, submission_id, options, owner=owner)


@contextlib.asynccontextmanager
async def submission_writer(redis: aioredis.Redis | None, submission_id: str, options: WriterOptions, *,
                            owner: str | None = None) -> AsyncIterator[RedisLock | None]:
    """Hold ``lock:submission:{id}`` (renewed) for the block; yield the lock, or ``None`` when Redis is down.

    Args:
        redis: Redis client (``None``: no Redis configured; the block runs unlocked, fenced).
        submission_id: the submission whose grades change.
        options: TTL, wait and outage bounds.
        owner: label of the holder, prefixed to the lock's token.

    Raises:
        SubmissionBusyError: another writer held the lock for ``wait`` seconds.

    """
    if redis is None:
        yield None
        return
    deadline = time.monotonic() + options.outage
    lock = RedisLock(redis, submission_lock_name(submission_id), ttl=options.ttl, owner=owner,
                     acquire_timeout=options.wait)
    async with contextlib.AsyncExitStack() as stack:
        held: RedisLock | None = lock
        while True:
            try:
                await stack.enter_async_context(_Released(lock))
                break
            except LockAcquireError as exc:
                raise SubmissionBusyError(f"submission {submission_id} is being changed by another writer; "
                                          f"retry shortly ({exc})") from exc
            except (RedisError, OSError) as exc:
                if time.monotonic() >= deadline:
                    logger.warning("Redis unreachable for %.1fs (%r): changing submission %s without its lock; "
                                   "the version fence still refuses stale writes", options.outage, exc,
                                   submission_id)
                    held = None
                    break
                await asyncio.sleep(RETRY_PAUSE)
        yield held


class _Released:
    """``async with`` a :class:`RedisLock` whose release tolerates a lost lock or a Redis gone meanwhile."""

    def __init__(self, lock: RedisLock) -> None:
        self.lock = lock

    async def __aenter__(self) -> RedisLock:
        return await self.lock.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.lock.__aexit__(None, None, None)
        except (LockNotOwnedError, RedisError, OSError) as err:  # the write is fenced; the TTL frees the key
            logger.warning("releasing %s failed: %r", self.lock.key, err)


async def check_version(conn: Any, submission_id: str, expected: int) -> dict[str, Any]:
    """Lock the submission row and return ``{status, version}``; refuse a version other than ``expected``.

    Raises:
        VersionConflictError: the row is at another version (or gone).

    """
    row = await (await conn.execute(LOCK_VERSION_SQL, (submission_id,))).fetchone()
    if row is None or int(row["version"]) != expected:
        raise VersionConflictError(submission_id, expected, None if row is None else int(row["version"]))
    return dict(row)


async def lock_submission(conn: Any, submission_id: str) -> dict[str, Any] | None:
    """Lock the submission row (``FOR UPDATE``) and return ``{status, version}`` (``None``: no such row)."""
    row = await (await conn.execute(LOCK_VERSION_SQL, (submission_id,))).fetchone()
    return None if row is None else {"status": row["status"], "version": int(row["version"])}


async def event_committed(conn: Any, event_id: str | None) -> bool:
    """Whether the outbox holds ``event_id``: a retried writer finds its own earlier commit this way."""
    if not event_id:
        return False
    return await (await conn.execute(EXISTING_EVENT_SQL, (event_id,))).fetchone() is not None
