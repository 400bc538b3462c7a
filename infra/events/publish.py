"""Idempotent publication of an outbox event: one Stream entry per event id, however often it is sent.

The relay may send an event again: its handler failed after the event was appended, or the relay
died between the append and its commit. One Lua script makes the append atomic with a marker:
``SET <marker> NX EX <ttl>`` first, and only when the marker is new ``XADD`` to the tenant stream and
``PUBLISH`` on the tenant channel; the marker then holds the stream id, which a repeated send gets
back instead of a second entry. The marker carries the tenant hash tag of the stream, so the script
touches a single slot.

The Stream entry (fields ``event`` = envelope JSON, ``event_id``) and the pub/sub message (the
envelope with ``stream_id`` added last) are what :mod:`infra.events.subscriber` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from infra.cache.keys import events_channel, events_stream, published_marker_key
from infra.events.outbox import EventEnvelope

# KEYS[1] marker, KEYS[2] stream; ARGV[1] marker ttl (s), ARGV[2] stream maxlen, ARGV[3] envelope JSON,
# ARGV[4] event id, ARGV[5] channel, ARGV[6] pub/sub message JSON (an object) without its stream id.
# A failed XADD (e.g. the stream key holds another type) drops the marker again: scripts do not roll back.
PUBLISH_ONCE_LUA = """
if not redis.call('SET', KEYS[1], '', 'NX', 'EX', ARGV[1]) then
  return {redis.call('GET', KEYS[1]), 0}
end
local id = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[3], 'event_id', ARGV[4])
if type(id) == 'table' and id.err then
  redis.call('DEL', KEYS[1])
  return id
end
redis.call('SET', KEYS[1], id, 'KEEPTTL')
redis.call('PUBLISH', ARGV[5], string.sub(ARGV[6], 1, -2) .. ',"stream_id":"' .. id .. '"}')
return {id, 1}
"""


@dataclass(frozen=True)
class Published:
    """Where an event is on its tenant's stream."""

    stream_id: str
    """The entry id of the event on the stream."""
    fresh: bool
    """``True`` if this call appended it; ``False`` if it was there already (nothing was sent)."""


class StreamPublisher:
    """Appends events to the tenant Streams and pub/sub channels, once per event id.

    Args:
        redis: the process's Redis client.
        stream_maxlen: approximate cap of each tenant stream.
        marker_ttl: seconds a published event's marker is kept; a re-send after that appends again
            (consumers still dedupe by event id).

    """

    def __init__(self, redis: aioredis.Redis, *, stream_maxlen: int = 10_000, marker_ttl: int = 7 * 86400) -> None:
        self.stream_maxlen = stream_maxlen
        self.marker_ttl = marker_ttl
        self._script = redis.register_script(PUBLISH_ONCE_LUA)

    async def publish(self, envelope: EventEnvelope) -> Published:
        """Append ``envelope`` to its tenant's stream and publish it, unless that was done before."""
        tenant = envelope.tenant_id
        message = json.dumps(envelope.to_dict(), separators=(",", ":"), default=str)
        result: Any = await self._script(
            keys=[published_marker_key(tenant, envelope.event_id), events_stream(tenant)],
            args=[self.marker_ttl, self.stream_maxlen, envelope.to_json(), envelope.event_id,
                  events_channel(tenant), message],
        )
        stream_id, fresh = result
        if isinstance(stream_id, bytes):  # a client without decode_responses
            stream_id = stream_id.decode()
        return Published(stream_id=str(stream_id), fresh=bool(int(fresh)))
