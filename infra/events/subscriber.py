"""The WebSocket side of live events: replay from the tenant's Redis Stream, then pub/sub, no duplicates.

The outbox relay appends every durable event to ``events_stream(tenant)`` (field ``event`` = the
envelope JSON) and PUBLISHes it on ``events_channel(tenant)``; progress notifications are only
published (no stream id). A :class:`LiveSubscriber` joins the process's
:class:`infra.events.hub.FeedHub` (one pub/sub connection for every feed) *before* reading the
stream, so nothing published between the replay and the live phase is lost; the live phase drops
messages whose stream id is not after the last one delivered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final, TypeGuard, cast

import redis.asyncio as aioredis

from infra.cache.keys import events_stream

if TYPE_CHECKING:
    from infra.events.hub import Feed, FeedHub

logger = logging.getLogger(__name__)

REPLAY_BATCH = 200
"""Stream entries read per XRANGE call during replay."""
RESYNC: Final = "resync"
"""Hub queue item: live messages may have been lost; replay the Stream from the last delivered id."""


def parse_stream_id(value: str | None) -> tuple[int, int] | None:
    """Parse a Redis Stream id ``<ms>-<seq>`` (or ``<ms>``); ``None`` when malformed."""
    if not value:
        return None
    ms, _, seq = str(value).partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        return None
    return int(ms), int(seq or 0)


def normalise_event(raw: Any, *, stream_id: str | None = None) -> dict[str, Any] | None:
    """Turn a relayed envelope (stream entry or pub/sub message) into the client message.

    Accepts the envelope itself (the relay adds ``stream_id``), a wrapper ``{"event": envelope}``, or
    an ephemeral :mod:`infra.events.live` notification ``{type, submission_id, at, data}``; returns
    ``{event_id, stream_id, event_type, submission_id, exam_id, occurred_at, payload}`` or ``None`` for
    something that is not an event.
    """
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    stream_id = stream_id or raw.get("stream_id")
    inner = raw.get("event") if "event" in raw and "event_type" not in raw else raw
    if isinstance(inner, str | bytes):
        try:
            inner = json.loads(inner)
        except ValueError:
            return None
    if isinstance(inner, dict) and "event_type" not in inner and "type" in inner:
        # an ephemeral notification of infra.events.live: {type, tenant_id, submission_id, exam_id, at, data}
        inner = {"event_type": inner["type"], "submission_id": inner.get("submission_id"),
                 "exam_id": inner.get("exam_id"), "occurred_at": inner.get("at"),
                 "payload": inner.get("data") or {}}
    if not isinstance(inner, dict) or "event_type" not in inner:
        return None
    stream_id = stream_id or inner.get("stream_id")
    payload = inner.get("payload") or {}
    if not isinstance(payload, dict):
        payload = {"value": payload}
    target_is_submission = inner.get("target_type") == "submission"
    submission_id = (inner.get("submission_id") or payload.get("submission_id")
                     or (inner.get("target_id") if target_is_submission else None))
    exam_id = inner.get("exam_id") or payload.get("exam_id") or (
        inner.get("target_id") if inner.get("target_type") == "exam" else None)
    return {
        "event_id": inner.get("event_id"), "stream_id": stream_id, "event_type": inner["event_type"],
        "submission_id": str(submission_id) if submission_id else None,
        "exam_id": str(exam_id) if exam_id else None,
        "occurred_at": inner.get("occurred_at"), "payload": payload,
    }


def for_submission(submission_id: str) -> Callable[[dict[str, Any]], bool]:
    """Filter: events about one submission."""
    return lambda event: event.get("submission_id") == submission_id


def for_exam(exam_id: str) -> Callable[[dict[str, Any]], bool]:
    """Filter: events about an exam or any of its submissions."""
    return lambda event: event.get("exam_id") == exam_id


class LiveSubscriber:
    """One client's feed: optional stream replay, then live events from the hub, in order, once each.

    Use as an async context manager (joins the process's :class:`infra.events.hub.FeedHub` on enter,
    leaves it on exit), then iterate :meth:`replay` and :meth:`live`. Without ``last_event_id`` the
    feed notes the Stream's tail when it opens, so a gap (the hub reconnected, or the client read too
    slowly) is filled from the Stream from there.

    Args:
        hub: the process's feed hub (one pub/sub connection for every feed).
        redis: the process's Redis client (Stream reads).
        tenant_id: whose channel and stream to read.
        accept: filter deciding which events this client gets.
        follows: the submission or exam id every accepted event names (lets the hub skip decoding
            the tenant's other traffic).
        last_event_id: stream id the client saw last; entries after it are replayed.

    Raises:
        infra.events.hub.FeedLimitError: on enter, when the tenant holds the most feeds allowed.

    """

    def __init__(self, hub: FeedHub, redis: aioredis.Redis, tenant_id: str,
                 accept: Callable[[dict[str, Any]], bool], *, follows: str | None = None,
                 last_event_id: str | None = None) -> None:
        self._hub = hub
        self._redis = redis
        self._tenant_id = tenant_id
        self._accept = accept
        self._follows = follows
        self._start = last_event_id if parse_stream_id(last_event_id) else None
        self._last: tuple[int, int] | None = parse_stream_id(self._start)
        self._tail: tuple[int, int] | None = self._last
        self._feed: Feed | None = None
        self._context: Any = None

    @property
    def last_stream_id(self) -> tuple[int, int] | None:
        """The newest stream id delivered so far (``None``: nothing durable yet)."""
        return self._last

    async def __aenter__(self) -> LiveSubscriber:
        context = self._hub.feed(self._tenant_id, self._accept, follows=self._follows)
        self._feed = await context.__aenter__()
        self._context = context
        try:
            if self._tail is None:  # subscribed first, so nothing after the tail can be missed
                self._tail = await self._stream_tail()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        context, self._context = self._context, None
        if context is not None:
            try:
                await context.__aexit__(None, None, None)
            except Exception as err:  # noqa: BLE001 - leaving the hub on a broken connection
                logger.debug("leaving the feed hub failed: %s", err)

    async def _stream_tail(self) -> tuple[int, int]:
        """The id of the Stream's newest entry (``0-0`` for an empty stream)."""
        newest = cast("list[tuple[str, Any]]",
                      await self._redis.xrevrange(events_stream(self._tenant_id), max="+", min="-", count=1))
        return (parse_stream_id(newest[0][0]) if newest else None) or (0, 0)

    def _take(self, event: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
        """Whether to deliver ``event``; advances the last delivered stream id."""
        if event is None or not self._accept(event):
            return False
        sid = parse_stream_id(event.get("stream_id"))
        if sid is None:
            return True
        if self._last is not None and sid <= self._last:
            return False
        self._last = sid
        return True

    async def replay(self) -> AsyncIterator[dict[str, Any]]:
        """Yield this client's stream entries after ``last_event_id`` (nothing without one)."""
        if self._start is None:
            return
        async for event in self._replay_after(self._start):
            yield event

    async def _replay_after(self, cursor: str) -> AsyncIterator[dict[str, Any]]:
        stream = events_stream(self._tenant_id)
        while True:
            # The pool decodes responses (``decode_responses=True``), so ids and fields are str; redis-py
            # types the reply as optional and bytes-or-str, which this client never gets.
            entries = cast(
                "list[tuple[str, dict[str, str]]]",
                await self._redis.xrange(stream, min=f"({cursor}", max="+", count=REPLAY_BATCH) or [],
            )
            for entry_id, fields in entries:
                event = normalise_event(fields.get("event"), stream_id=entry_id)
                if self._take(event):
                    yield event
                cursor = entry_id
            if len(entries) < REPLAY_BATCH:
                return

    async def live(self) -> AsyncIterator[dict[str, Any]]:
        """Yield live events as they arrive; after a gap, first what the Stream holds since the last one."""
        assert self._feed is not None, "use LiveSubscriber as an async context manager"
        while True:
            item = await self._feed.queue.get()
            if item == RESYNC:
                since = max(self._last or (0, 0), self._tail or (0, 0))
                async for event in self._replay_after(f"{since[0]}-{since[1]}"):
                    yield event
                continue
            if self._take(item):
                yield item
