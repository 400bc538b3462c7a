"""Transactional outbox: events written in the business transaction, deduplicated by consumers.

:func:`add_event` inserts an :class:`EventEnvelope` into ``event_outbox`` on the caller's open
transaction, so the event commits (or rolls back) together with the business rows. The relay
(:mod:`infra.events.relay`) later publishes committed events to Redis. Delivery is at least once; a
consumer calls :func:`mark_consumed` in its own transaction and skips events it has seen.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

INSERT_EVENT_SQL = """
INSERT INTO event_outbox (event_id, tenant_id, event_type, actor_id, target_type, target_id, version,
                          trace_id, correlation_id, causation_id, payload)
VALUES (%(event_id)s, %(tenant_id)s, %(event_type)s, %(actor_id)s, %(target_type)s, %(target_id)s,
        %(version)s, %(trace_id)s, %(correlation_id)s, %(causation_id)s, %(payload)s)
ON CONFLICT (event_id) DO NOTHING
RETURNING occurred_at
"""
EXISTING_EVENT_SQL = "SELECT * FROM event_outbox WHERE event_id = %s"
LATEST_EVENT_SQL = """
SELECT event_id::text AS event_id FROM event_outbox
 WHERE tenant_id = %(tenant_id)s AND target_type = %(target_type)s AND target_id = %(target_id)s
   AND (cardinality(%(types)s::text[]) = 0 OR event_type = ANY(%(types)s::text[]))
 ORDER BY id DESC LIMIT 1"""
"""The aggregate's latest event (of the given types, or any); index ``event_outbox_target_idx``."""

MARK_CONSUMED_SQL = """
INSERT INTO consumed_events (event_id, consumer, tenant_id) VALUES (%s, %s, %s)
ON CONFLICT (event_id, consumer) DO NOTHING
RETURNING 1
"""


class EventIdConflictError(ValueError):
    """An explicit ``event_id`` is already used by an event this tenant cannot see (another tenant's)."""


@dataclass
class EventEnvelope:
    """One durable event, as stored in the outbox and published to Redis."""

    event_id: str
    """Unique id (uuid); consumers dedupe on it."""
    event_type: str
    """Dotted type, e.g. ``submission.received`` (see :class:`infra.constants.EventType`)."""
    tenant_id: str
    """Owning tenant; events are only ever published on that tenant's stream and channel."""
    actor_id: str | None
    """Who caused the change (user, service), if known."""
    target_type: str
    """Aggregate type, e.g. ``submission``."""
    target_id: str
    """Aggregate id; events of one aggregate are published in commit order."""
    version: int
    """Aggregate version (or schema version of the payload) the event describes."""
    occurred_at: datetime
    """When the event was written (database clock)."""
    trace_id: str | None = None
    """Trace id of the request that produced the event."""
    correlation_id: str | None = None
    """Groups the events of one business flow: every event of a submission carries the submission's id."""
    causation_id: str | None = None
    """Id of the event that caused this one (``None`` for the first of a flow, e.g. ``submission.received``)."""
    payload: dict[str, Any] = field(default_factory=dict)
    """Event body (JSON object)."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (``occurred_at`` as ISO 8601)."""
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat()
        return data

    def to_json(self) -> str:
        """Serialise to compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventEnvelope:
        """Build from :meth:`to_dict` output; unknown keys (e.g. ``stream_id``) are ignored."""
        occurred = data["occurred_at"]
        return cls(
            event_id=str(data["event_id"]), event_type=data["event_type"], tenant_id=data["tenant_id"],
            actor_id=data.get("actor_id"), target_type=data["target_type"], target_id=str(data["target_id"]),
            version=int(data.get("version", 1)),
            occurred_at=occurred if isinstance(occurred, datetime) else datetime.fromisoformat(occurred),
            trace_id=data.get("trace_id"), correlation_id=data.get("correlation_id"),
            causation_id=data.get("causation_id"), payload=dict(data.get("payload") or {}),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> EventEnvelope:
        """Parse JSON produced by :meth:`to_json` (or the relay's pub/sub message)."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EventEnvelope:
        """Build from an ``event_outbox`` row (a ``dict_row``)."""
        return cls.from_dict(row)


async def add_event(
    conn: psycopg.AsyncConnection[Any], *, tenant_id: str, event_type: str, target_type: str,
    target_id: str, payload: dict[str, Any], actor_id: str | None = None, version: int = 1,
    trace_id: str | None = None, correlation_id: str | None = None, causation_id: str | None = None,
    event_id: str | None = None,
) -> EventEnvelope:
    """Write an event into the outbox on the caller's open (business) transaction.

    The event becomes visible to the relay only when that transaction commits; a rollback discards
    it with the business rows. ``conn`` must come from ``PoolManager.transaction(tenant_id)``: the
    row-level-security check refuses an event for another tenant.

    Args:
        conn: connection inside the business transaction.
        tenant_id: owning tenant.
        event_type: dotted event type.
        target_type: aggregate type.
        target_id: aggregate id.
        payload: JSON object body (``jsonb``: strings must not contain NUL characters).
        actor_id: who caused it.
        version: aggregate/payload version.
        trace_id: request trace id.
        correlation_id: business-flow id.
        causation_id: id of the causing event or command.
        event_id: explicit id (uuid string); a new uuid4 by default. Activities pass an id derived
            from the workflow and the state change (:func:`derived_event_id`), so a re-run of the
            activity writes nothing new: the event already stored is kept and returned as it is.

    Returns:
        The envelope as stored, with the database's ``occurred_at``. For an ``event_id`` stored
        already, the stored event (its payload, ids and time), whatever this call passed.

    Raises:
        EventIdConflictError: ``event_id`` belongs to another tenant's event.

    """
    envelope_id = str(uuid.UUID(event_id)) if event_id else str(uuid.uuid4())
    params = {
        "event_id": envelope_id, "tenant_id": tenant_id, "event_type": event_type, "actor_id": actor_id,
        "target_type": target_type, "target_id": str(target_id), "version": version,
        "trace_id": trace_id, "correlation_id": correlation_id, "causation_id": causation_id,
        "payload": Jsonb(payload),
    }
    cur = await conn.execute(INSERT_EVENT_SQL, params, prepare=False)
    row = await cur.fetchone()
    if row is None:  # this event id is stored already (a re-run): the stored event stands
        cur = await conn.execute(EXISTING_EVENT_SQL, (envelope_id,), prepare=False)
        existing = await cur.fetchone()
        if existing is None:  # stored, but row-level security hides it: another tenant's event
            raise EventIdConflictError(f"event id {envelope_id} is taken by another tenant's event")
        return EventEnvelope.from_row(existing if isinstance(existing, dict) else dict(zip(
            [c.name for c in cur.description or []], existing, strict=True)))
    occurred_at = row["occurred_at"] if isinstance(row, dict) else row[0]
    return EventEnvelope(
        event_id=envelope_id, event_type=event_type, tenant_id=tenant_id, actor_id=actor_id,
        target_type=target_type, target_id=str(target_id), version=version, occurred_at=occurred_at,
        trace_id=trace_id, correlation_id=correlation_id, causation_id=causation_id, payload=dict(payload),
    )


async def latest_event_id(conn: psycopg.AsyncConnection[Any], *, tenant_id: str, target_type: str, target_id: str,
                          event_types: tuple[str, ...] = ()) -> str | None:
    """Id of the aggregate's latest stored event of ``event_types`` (any type if empty), or ``None``.

    How writers find an event's ``causation_id``: e.g. a grading run's events are caused by the
    submission's latest ``submission.received`` / ``submission.retried``, a review by its latest
    ``submission.graded``. Reads the caller's transaction, so an event written earlier in it counts.
    """
    cur = await conn.execute(LATEST_EVENT_SQL, {"tenant_id": tenant_id, "target_type": target_type,
                                                "target_id": str(target_id), "types": list(event_types)})
    row = await cur.fetchone()
    if row is None:
        return None
    return str(row["event_id"] if isinstance(row, dict) else row[0])


EVENT_ID_NAMESPACE = uuid.UUID("5b0e8f7c-3f4e-4d8a-9a51-6f1d2c9e7a10")
"""Namespace of :func:`derived_event_id` (fixed forever: changing it changes every derived id)."""


def derived_event_id(*parts: object) -> str:
    """A deterministic event id (uuid5) from what identifies a state change.

    Activities derive their events' ids from the workflow and the change (e.g. workflow id, run id,
    event type, target status), so a retried or re-run activity emits the same event id and
    consumers deduplicating by id see one change once.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, "\x1f".join(str(p) for p in parts)))


async def mark_consumed(conn: psycopg.AsyncConnection[Any], event_id: str, consumer: str,
                        tenant_id: str) -> bool:
    """Record that ``consumer`` handled ``event_id``; tell whether this is the first time.

    Call it in the consumer's own tenant transaction, together with the side effects of handling the
    event: a duplicate delivery then finds the row and is skipped (applied once).

    Args:
        conn: connection inside ``PoolManager.transaction(tenant_id)``.
        event_id: the event's id.
        consumer: stable consumer name.
        tenant_id: the event's tenant.

    Returns:
        ``True`` if the event is new for this consumer, ``False`` if it was already consumed.

    """
    cur = await conn.execute(MARK_CONSUMED_SQL, (event_id, consumer, tenant_id))
    return await cur.fetchone() is not None
