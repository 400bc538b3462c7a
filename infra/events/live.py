"""Live notifications: progress and state-change messages on a tenant's Redis pub/sub channel.

These are best-effort and ephemeral (the durable copy of a state change is the outbox event):
a Redis failure is logged and swallowed so grading never fails because nobody is listening.
"""

from __future__ import annotations

import json
import logging
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
