"""Live feeds over WebSocket: a snapshot, then the events of one submission (or one exam), in order.

Connect with ``?last_event_id=<stream id>`` to first receive the durable events after that id from
the tenant's Redis Stream, then live ones, with no duplicates. Every message is JSON
``{event_id, stream_id, event_type, submission_id, occurred_at, payload}``; the first one has
``event_type`` ``snapshot`` and the current view as payload. Authentication: a bearer token in the
``Authorization`` header or ``?token=``.

Refusals are close codes after an accepted handshake, so every client can tell them apart: 4401 (no
or a bad token), 4403 (the token grants no known role, or its roles may not follow this feed: a
caller whose only role is ``submitter`` follows only the submissions it created and no exam feed,
see :mod:`api.auth`), 4404 (no such submission/exam in the token's tenant: another tenant's id, or
another caller's submission for a submitter, looks exactly like a missing one), 4429 (the tenant
holds ``GRADEFLOW_WS_MAX_FEEDS_PER_TENANT`` feeds on this API process). Over the connect rate limit
the handshake is answered 429; with PostgreSQL unavailable, 503 (both with ``Retry-After``). After
the snapshot, 1011 means live events are unavailable (Redis down). Every feed of the process shares
one Redis pub/sub connection (:class:`infra.events.hub.FeedHub`). Ids take any UUID spelling and are
followed by their canonical one (the one events carry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from api.auth import may_read_submission, principal_from_scope, reads_everything
from infra.db.values import canonical_uuid
from infra.events.hub import FeedLimitError
from infra.events.subscriber import LiveSubscriber, for_exam, for_submission
from infra.security.tokens import NoRoleError, Principal
from infra.stores import exams, submissions

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/ws", tags=["live"])

CLOSE_UNAUTHENTICATED = 4401
"""Close code: no bearer token, or one that is invalid or expired."""
CLOSE_FORBIDDEN = 4403
"""Close code: the token grants no known role, or its roles may not follow this feed."""
CLOSE_NOT_FOUND = 4404
"""Close code: no such submission/exam in the token's tenant (another tenant's id looks the same)."""
CLOSE_TOO_MANY_FEEDS = 4429
"""Close code: the tenant holds ``GRADEFLOW_WS_MAX_FEEDS_PER_TENANT`` feeds on this API process already."""
CLOSE_UNAVAILABLE = 1011
"""Close code after the snapshot: live events are unavailable (Redis down)."""
MESSAGE_FIELDS = ("event_id", "stream_id", "event_type", "submission_id", "occurred_at", "payload")


def _canonical(resource_id: str) -> str:
    """The canonical spelling of a UUID path segment (anything else stays as it is: nothing to find)."""
    try:
        return canonical_uuid(resource_id)
    except ValueError:
        return resource_id


def _message(event: dict[str, Any]) -> dict[str, Any]:
    return {k: event.get(k) for k in MESSAGE_FIELDS}


def _snapshot(payload: dict[str, Any], submission_id: str | None) -> dict[str, Any]:
    return {"event_id": None, "stream_id": None, "event_type": "snapshot", "submission_id": submission_id,
            "occurred_at": datetime.now(UTC).isoformat(), "payload": payload}


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    """Accept the handshake, then close with ``code``: browsers see close codes, never a handshake status."""
    await websocket.accept()
    await websocket.close(code=code, reason=reason)


async def _feed(websocket: WebSocket, accept: Callable[[dict[str, Any]], bool],
                load: Callable[[Principal], Awaitable[dict[str, Any] | None]], submission_id: str | None,
                follows: str, last_event_id: str | None, *,
                allowed: Callable[[Principal], bool] = lambda _: True) -> None:
    """Authenticate, join the hub, send the snapshot (``load(principal)``), replay, then relay live events."""
    principal = principal_from_scope(websocket.scope)
    if isinstance(principal, NoRoleError):
        await _refuse(websocket, CLOSE_FORBIDDEN, str(principal))
        return
    if not isinstance(principal, Principal):
        await _refuse(websocket, CLOSE_UNAUTHENTICATED, "missing or invalid bearer token")
        return
    if not allowed(principal):
        await _refuse(websocket, CLOSE_FORBIDDEN, "requires one of the roles: reviewer, admin")
        return
    tenant = principal.tenant_id
    state = websocket.app.state
    subscriber: LiveSubscriber | None = LiveSubscriber(state.feed_hub, state.pools.redis, tenant, accept,
                                                       follows=follows, last_event_id=last_event_id)
    try:
        await subscriber.__aenter__()  # type: ignore[union-attr]
    except FeedLimitError as exc:
        await _refuse(websocket, CLOSE_TOO_MANY_FEEDS, str(exc))
        return
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("live feed without redis: %r", exc)
        subscriber = None
    try:
        snapshot = await load(principal)  # an outage here denies the handshake with a 503 problem
        if snapshot is None:  # another tenant's id looks exactly like a missing one
            await _refuse(websocket, CLOSE_NOT_FOUND, "not found")
            return
        await websocket.accept()
        await websocket.send_json(_snapshot(snapshot, submission_id))
        if subscriber is None:
            await websocket.close(code=CLOSE_UNAVAILABLE, reason="live events unavailable")
            return
        async for event in subscriber.replay():
            await websocket.send_json(_message(event))
        await _pump(websocket, subscriber)
    except (WebSocketDisconnect, RedisError) as exc:
        logger.debug("live feed ended: %s", exc)
    finally:
        if subscriber is not None:
            await subscriber.__aexit__(None, None, None)


async def _pump(websocket: WebSocket, subscriber: LiveSubscriber) -> None:
    """Relay live events while watching for the client's disconnect."""

    async def relay() -> None:
        async for event in subscriber.live():
            await websocket.send_json(_message(event))

    async def watch() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(relay()), asyncio.create_task(watch())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@router.websocket("/submissions/{submission_id}")
async def submission_feed(websocket: WebSocket, submission_id: str, last_event_id: str | None = None) -> None:
    """Snapshot of the submission, then every event about it (replayed after ``last_event_id``)."""
    state = websocket.app.state
    submission_id = _canonical(submission_id)

    async def load(principal: Principal) -> dict[str, Any] | None:
        view, _ = await submissions.read_submission(state.pools, state.cache, principal.tenant_id, submission_id)
        if view is None or not may_read_submission(principal, view.get("submitted_by")):
            return None  # another caller's submission looks exactly like a missing one to a submitter
        return view

    await _feed(websocket, for_submission(submission_id), load, submission_id, submission_id, last_event_id)


@router.websocket("/exams/{exam_id}")
async def exam_feed(websocket: WebSocket, exam_id: str, last_event_id: str | None = None) -> None:
    """Snapshot of the exam (with submission counts per status), then events naming the exam.

    Reviewers and admins only: the snapshot holds the answer keys, the events every student's grades.
    """
    state = websocket.app.state
    exam_id = _canonical(exam_id)

    async def load(principal: Principal) -> dict[str, Any] | None:
        exam, _ = await exams.read_exam(state.pools, state.cache, principal.tenant_id, exam_id)
        if exam is None:
            return None
        counts = await submissions.count_by_status(state.pools, principal.tenant_id, exam_id)
        return {"exam": exam, "submissions_by_status": counts}

    await _feed(websocket, for_exam(exam_id), load, None, exam_id, last_event_id, allowed=reads_everything)
