"""Dead letters (``dlq_items``): what gave up after its retries, for an operator to see, replay or discard.

The outbox relay writes a record when an event's handler has failed logically ``outbox_max_attempts``
times (``outbox_dead_letter``); the event is then ``failed`` and holds back the later events of its
aggregate. :func:`replay_dead_letter` puts the event back to ``pending`` with a fresh budget;
:func:`discard_dead_letter` marks it ``discarded`` so the later events go on without it. Both wake the
relays. Operators work across tenants with no tenant context, so every statement goes through a
narrow ``SECURITY DEFINER`` function of ``migrations/0007_outbox_dead_letters.sql``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from infra.db.pools import PoolManager

LIST_SQL = "SELECT * FROM dlq_items_find(NULL, %(status)s, %(tenant)s, %(limit)s)"
SHOW_SQL = "SELECT * FROM dlq_items_find(%(id)s, NULL, NULL, 1)"
RESOLVE_SQL = "SELECT dlq_resolve(%(id)s, %(action)s, %(by)s) AS outcome"

Status = Literal["open", "replayed", "discarded"]
STATUSES: tuple[Status, ...] = ("open", "replayed", "discarded")


class DeadLetterError(LookupError):
    """A dead letter is missing, or not in a state the operation applies to."""


@dataclass(frozen=True)
class DeadLetter:
    """One ``dlq_items`` record, as an operator sees it."""

    id: int
    """Record id (what ``gradeflow dlq show|replay|discard`` take)."""
    tenant_id: str
    """Owning tenant."""
    source: str
    """What gave up, e.g. ``outbox``."""
    kind: str | None
    """What it was doing, e.g. the event type."""
    reference_id: str
    """Id of the thing that failed, e.g. the event id."""
    status: Status
    """``open`` until replayed or discarded (a re-failure re-opens it)."""
    attempts: int
    """Attempts spent, over every time it failed."""
    first_error: str | None
    """The error of the first time it gave up."""
    last_error: str
    """The latest error."""
    payload: dict[str, Any]
    """What failed (for the outbox: the event, with its outbox ``id``)."""
    first_failed_at: datetime
    """When it first gave up."""
    last_failed_at: datetime
    """When it last gave up."""
    updated_at: datetime
    """Last change of the record."""
    resolved_by: str | None
    """Who replayed or discarded it."""
    blocking: int
    """Later events of the same aggregate it holds back (pending behind it)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeadLetter:
        """Build from a ``dlq_items_find`` row."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


async def list_dead_letters(pools: PoolManager, *, status: Status | None = "open", tenant_id: str | None = None,
                            limit: int = 100) -> list[DeadLetter]:
    """Dead letters, oldest first.

    Args:
        pools: pool manager (no tenant context needed).
        status: only this status; ``None`` for all.
        tenant_id: only this tenant; ``None`` for all.
        limit: at most this many.

    """
    async with pools.connection() as conn:
        cur = await conn.execute(LIST_SQL, {"status": status, "tenant": tenant_id, "limit": limit})
        return [DeadLetter.from_row(row) for row in await cur.fetchall()]


async def get_dead_letter(pools: PoolManager, item_id: int) -> DeadLetter:
    """One dead letter; :class:`DeadLetterError` if there is none with that id."""
    async with pools.connection() as conn:
        cur = await conn.execute(SHOW_SQL, {"id": item_id})
        row = await cur.fetchone()
    if row is None:
        raise DeadLetterError(f"dead letter {item_id} not found")
    return DeadLetter.from_row(row)


async def replay_dead_letter(pools: PoolManager, item_id: int, *, by: str) -> DeadLetter:
    """Put a dead-lettered event back to ``pending`` with a fresh attempt budget; record ``replayed``.

    Raises:
        DeadLetterError: no such record, or it is not open, or its event is no longer ``failed``.

    """
    return await _resolve(pools, item_id, "replay", by)


async def discard_dead_letter(pools: PoolManager, item_id: int, *, by: str) -> DeadLetter:
    """Give up a dead-lettered event for good (``discarded``): later events of its aggregate go on.

    Raises:
        DeadLetterError: no such record, or it is not open, or its event is no longer ``failed``.

    """
    return await _resolve(pools, item_id, "discard", by)


async def _resolve(pools: PoolManager, item_id: int, action: str, by: str) -> DeadLetter:
    async with pools.connection() as conn, conn.transaction():
        cur = await conn.execute(RESOLVE_SQL, {"id": item_id, "action": action, "by": by})
        outcome = ((await cur.fetchone()) or {}).get("outcome")
    if outcome in ("replayed", "discarded"):
        return await get_dead_letter(pools, item_id)
    if outcome == "not_found":
        raise DeadLetterError(f"dead letter {item_id} not found")
    item = await get_dead_letter(pools, item_id)
    if outcome == "not_open":
        raise DeadLetterError(f"dead letter {item_id} is {item.status}, not open")
    if outcome == "unsupported_source":
        raise DeadLetterError(f"dead letter {item_id} comes from {item.source}; only outbox events can be "
                              f"replayed or discarded here")
    raise DeadLetterError(f"dead letter {item_id}: event {item.reference_id} is no longer failed")
