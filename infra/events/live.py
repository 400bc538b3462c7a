"""Live notifications: progress and state-change messages on a tenant's Redis pub/sub channel.

These are best-effort and ephemeral (the durable copy of a state change is the outbox event):
a Redis failure is logged and swallowed so grading never fails because nobody is listening.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from infra.cache import keys
from infra.constants import EventType

logger = logging.getLogger(__name__)


def live_message(event_type: str, *, tenant_id: str, submission_id: str, data: dict[str, Any],
                 exam_id: str | None = None) -> str:
    """Encode a live message (JSON with type, tenant, submission, exam, time and data)."""
    message: dict[str, Any] = {"type": event_type, "tenant_id": tenant_id, "submission_id": submission_id}
    if exam_id:
        message["exam_id"] = exam_id  # routes the message to the exam's feeds too
    message.update(at=datetime.now(UTC).isoformat(), data=data)
    return json.dumps(message, default=str)


async def publish(redis: aioredis.Redis, event_type: str, *, tenant_id: str, submission_id: str,
                  data: dict[str, Any], exam_id: str | None = None) -> bool:
    """Publish one message on the tenant's events channel.

    Args:
        redis: the process's Redis client.
        event_type: message type (``grading.progress``, ``submission.status_changed``).
        tenant_id: whose channel.
        submission_id: the submission the message is about (its feed gets it).
        data: the message's payload.
        exam_id: the submission's exam; with it, the exam's feeds get the message too.

    Returns:
        ``True`` if Redis accepted it, ``False`` if publishing failed (logged).

    """
    message = live_message(event_type, tenant_id=tenant_id, submission_id=submission_id, data=data,
                           exam_id=exam_id)
    try:
        await redis.publish(keys.events_channel(tenant_id), message)
    except Exception as exc:  # noqa: BLE001 - live updates are best-effort
        logger.warning("live publish of %s for %s failed: %r", event_type, submission_id, exc)
        return False
    return True


async def publish_progress(redis: aioredis.Redis, *, tenant_id: str, submission_id: str,
                           progress: dict[str, Any], exam_id: str | None = None) -> bool:
    """Publish a ``grading.progress`` message (to the submission's feeds, and the exam's with ``exam_id``)."""
    return await publish(redis, EventType.GRADING_PROGRESS, tenant_id=tenant_id,
                         submission_id=submission_id, data=progress, exam_id=exam_id)


async def publish_status(redis: aioredis.Redis, *, tenant_id: str, submission_id: str, status: str,
                         data: dict[str, Any] | None = None) -> bool:
    """Publish a ``submission.status_changed`` message."""
    return await publish(redis, EventType.SUBMISSION_STATUS, tenant_id=tenant_id,
                         submission_id=submission_id, data={"status": status, **(data or {})})


class ProgressThrottle:
    """One agent run's ``grading.progress`` messages, at most one per ``interval`` seconds.

    Leading and trailing edge: an update after a quiet interval goes out at once; updates inside the
    interval are coalesced into one message sent when it ends (the latest progress, whose
    ``graded_questions`` include every skipped step's). A grading of 20 rubric questions in 50 ms
    sends two messages instead of twenty-odd; a slow one (a model, a demo delay) still sends every
    question. Best-effort like every live message: failures are logged, never raised.
    """

    def __init__(self, redis: aioredis.Redis, *, tenant_id: str, submission_id: str, exam_id: str | None,
                 interval: float) -> None:
        self._redis, self._interval = redis, interval
        self._ids = {"tenant_id": tenant_id, "submission_id": submission_id, "exam_id": exam_id}
        self._last = float("-inf")
        self._latest: dict[str, Any] | None = None
        self._trailing: asyncio.Task[None] | None = None

    async def update(self, progress: dict[str, Any], *, flush: bool = False) -> None:
        """Record the latest progress; publish now if the interval has passed (or ``flush``), else later."""
        self._latest = progress
        wait = self._last + self._interval - time.monotonic()
        if flush or wait <= 0:
            await self._publish()
        elif self._trailing is None:
            self._trailing = asyncio.create_task(self._publish_after(wait))

    async def close(self) -> None:
        """Drop a pending trailing message (the run's last update was flushed)."""
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None

    async def _publish_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._trailing = None
        await self._publish()

    async def _publish(self) -> None:
        if self._trailing is not None and self._trailing is not asyncio.current_task():
            self._trailing.cancel()
            self._trailing = None
        progress, self._latest = self._latest, None
        if progress is None:
            return
        self._last = time.monotonic()
        await publish_progress(self._redis, progress=progress, **self._ids)  # type: ignore[arg-type]
