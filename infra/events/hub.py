"""One pub/sub connection per process for every live feed: the :class:`FeedHub`.

Each WebSocket feed used to hold a pooled Redis connection for its whole life (``SUBSCRIBE`` on a
connection of its own), so a few dozen feeds exhausted the process's pool. The hub holds one
``PubSub`` connection, subscribes to a tenant's channel while at least one feed of that tenant is
open (reference counted) and fans each message out to the feeds' bounded queues.

Cheap routing first: a feed names the id it follows (a submission or an exam id, its *needle*), and a
message is JSON-decoded only when some feed's needle occurs in its raw text; the decoded event is
then shared by every feed that takes it. A tenant's traffic about other submissions costs a few
substring searches, not one JSON decode per watcher.

After a Redis error the hub reconnects with backoff and subscribes again; every channel that was
subscribed before gets a :data:`RESYNC` item on its feeds' queues, telling them to fill the gap from
the tenant's Redis Stream (durable events; ephemeral progress in the gap is lost). A feed whose queue
overflows (a client that does not read) is treated the same way: its queue is emptied and resynced.

A per-tenant cap bounds the feeds one tenant may hold open in this process
(:class:`FeedLimitError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from infra.cache.keys import events_channel
from infra.events.subscriber import RESYNC, normalise_event

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256
"""Events a feed may have waiting before it is resynced from the Stream instead."""
SUBSCRIBE_TIMEOUT = 5.0
"""Seconds a new feed waits for Redis to confirm its tenant's subscription."""
POLL_SECONDS = 1.0
"""Longest wait of one read on the pub/sub connection (lets the reader notice a close)."""
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0
"""Backoff bounds (seconds) between attempts to subscribe again after a Redis error."""
PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")
"""Ids that JSON writes verbatim, so a substring test on the raw message cannot miss them."""


class FeedLimitError(RuntimeError):
    """The tenant already holds the most live feeds this process allows."""

    def __init__(self, tenant_id: str, limit: int) -> None:
        super().__init__(f"too many live feeds for this tenant (limit {limit} per API process)")
        self.tenant_id = tenant_id
        self.limit = limit


@dataclass(eq=False)
class Feed:
    """One subscriber's side of the hub: a bounded queue of events (or :data:`RESYNC`)."""

    tenant_id: str
    accept: Callable[[dict[str, Any]], bool]
    """Exact filter on the decoded event."""
    needle: str | None
    """Text every accepted message contains (``None``: decode every message of the tenant)."""
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def push(self, item: Any) -> None:
        """Queue ``item``; a full queue is emptied and resynced (the Stream has the durable events)."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            logger.warning("live feed of tenant %s fell %d events behind; resyncing it from the stream",
                           self.tenant_id, QUEUE_SIZE)
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)


@dataclass(eq=False)
class _Channel:
    feeds: set[Feed]
    ready: asyncio.Future[None]
    """Resolved when Redis confirms the subscription; a later confirmation means a resubscribe."""


class _Decoded:
    """Decode a raw message at most once, on first demand."""

    __slots__ = ("_raw", "_event", "_done", "_hub")

    def __init__(self, raw: Any, hub: FeedHub) -> None:
        self._raw, self._done, self._hub = raw, False, hub
        self._event: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        if not self._done:
            self._done = True
            self._hub.decoded += 1
            self._event = normalise_event(self._raw)
        return self._event


class FeedHub:
    """Multiplexes every live feed of a process over one Redis pub/sub connection.

    Args:
        redis: the process's Redis client; the hub takes one connection of its pool for as long as
            any feed is open.
        max_feeds_per_tenant: feeds one tenant may hold open at once in this process.

    Attributes:
        messages: pub/sub messages received (for metrics and tests).
        decoded: messages that had to be JSON-decoded (at most one decode per message).

    """

    def __init__(self, redis: aioredis.Redis, *, max_feeds_per_tenant: int = 100) -> None:
        self._redis = redis
        self.max_feeds_per_tenant = max_feeds_per_tenant
        self._pubsub: Any = None
        self._channels: dict[str, _Channel] = {}
        self._per_tenant: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.messages = 0
        self.decoded = 0

    def feeds_of(self, tenant_id: str) -> int:
        """Feeds ``tenant_id`` holds open now."""
        return self._per_tenant.get(tenant_id, 0)

    @property
    def channels(self) -> int:
        """Tenant channels subscribed now."""
        return len(self._channels)

    @asynccontextmanager
    async def feed(self, tenant_id: str, accept: Callable[[dict[str, Any]], bool], *,
                   follows: str | None = None) -> AsyncIterator[Feed]:
        """Open a feed of ``tenant_id``'s live events that ``accept`` takes; close it on exit.

        Args:
            tenant_id: whose channel to follow.
            accept: exact filter on the decoded event.
            follows: an id every accepted message contains (submission or exam id), used to skip
                decoding the rest of the tenant's traffic.

        Raises:
            FeedLimitError: the tenant holds ``max_feeds_per_tenant`` feeds already.
            RedisError, OSError, TimeoutError: the subscription could not be made (Redis down).

        """
        if self._closed:
            raise RedisError("the feed hub is closed")
        if self._per_tenant.get(tenant_id, 0) >= self.max_feeds_per_tenant:
            raise FeedLimitError(tenant_id, self.max_feeds_per_tenant)
        self._per_tenant[tenant_id] = self._per_tenant.get(tenant_id, 0) + 1
        feed = Feed(tenant_id, accept, follows if follows and PLAIN_ID.fullmatch(follows) else None)
        channel = events_channel(tenant_id)
        try:
            await self._attach(channel, feed)
            try:
                yield feed
            finally:
                await self._detach(channel, feed)
        finally:
            left = self._per_tenant.get(tenant_id, 1) - 1
            if left > 0:
                self._per_tenant[tenant_id] = left
            else:
                self._per_tenant.pop(tenant_id, None)

    async def _attach(self, channel: str, feed: Feed) -> None:
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is None:
                entry = _Channel({feed}, asyncio.get_running_loop().create_future())
                self._channels[channel] = entry
                try:
                    if self._pubsub is None:
                        await self._subscribe_all()
                    else:
                        await self._pubsub.subscribe(channel)
                except BaseException as exc:
                    self._channels.pop(channel, None)
                    if not entry.ready.done():
                        entry.ready.set_exception(RedisError(f"subscribing failed: {exc!r}"))
                        entry.ready.exception()  # retrieved: waiters get it through their own await
                    raise
                self._start_reader()
            else:
                entry.feeds.add(feed)
        try:
            await asyncio.wait_for(asyncio.shield(entry.ready), SUBSCRIBE_TIMEOUT)
        except BaseException:
            await self._detach(channel, feed)
            raise

    async def _detach(self, channel: str, feed: Feed) -> None:
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is None or feed not in entry.feeds:
                return
            entry.feeds.discard(feed)
            if entry.feeds:
                return
            del self._channels[channel]
            if self._pubsub is not None:
                try:
                    await self._pubsub.unsubscribe(channel)
                except (RedisError, OSError) as exc:  # the reader notices the broken connection
                    logger.debug("unsubscribe of %s failed: %r", channel, exc)

    async def _subscribe_all(self) -> None:
        """With the lock held: a fresh pub/sub connection subscribed to every channel in use."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
        try:
            await pubsub.subscribe(*self._channels)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        self._pubsub = pubsub

    def _start_reader(self) -> None:
        self._wake.set()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="feed-hub-reader")

    async def _read(self) -> None:
        """Read the pub/sub connection and dispatch; reconnect with backoff after errors."""
        delay = RECONNECT_MIN
        while not self._closed:
            pubsub = self._pubsub
            if pubsub is None:
                if not self._channels:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    async with self._lock:
                        if self._pubsub is None and self._channels:
                            await self._subscribe_all()
                    logger.info("live feeds: subscribed again to %d tenant channel(s)", len(self._channels))
                    delay = RECONNECT_MIN
                except (RedisError, OSError) as exc:
                    logger.warning("live feeds: Redis unavailable (%r); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                continue
            try:
                message = await pubsub.get_message(timeout=POLL_SECONDS)
            except (RedisError, OSError, RuntimeError) as exc:
                logger.warning("live feeds: pub/sub connection lost (%r); reconnecting", exc)
                await self._drop(pubsub)
                continue
            if message is not None:
                try:
                    self._dispatch(message)
                except Exception:  # a bad message or filter must not stop every feed
                    logger.exception("live feeds: dispatching a message failed")

    async def _drop(self, pubsub: Any) -> None:
        async with self._lock:
            if self._pubsub is pubsub:
                self._pubsub = None
        with contextlib.suppress(Exception):
            await pubsub.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        entry = self._channels.get(str(message.get("channel")))
        if entry is None:
            return
        if kind == "subscribe":
            if not entry.ready.done():
                entry.ready.set_result(None)
            else:  # subscribed again after a reconnect: messages may have been lost meanwhile
                for feed in entry.feeds:
                    feed.push(RESYNC)
            return
        if kind != "message":
            return
        self.messages += 1
        raw = message.get("data")
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
        decoded = _Decoded(raw, self)
        for feed in entry.feeds:
            if feed.needle is not None and feed.needle not in text:
                continue
            event = decoded.get()
            if event is not None and feed.accept(event):
                feed.push(event)

    async def close(self) -> None:
        """Stop reading and release the pub/sub connection."""
        self._closed = True
        self._wake.set()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
