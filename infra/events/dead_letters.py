"""Dead letters (``dlq_items``): whatever gave up after its retries, for an operator to see, replay or discard.

One record per (tenant, kind, reference): ``outbox`` events whose handler kept failing (written by the
relay through ``outbox_dead_letter``), external events (``external_event``) the bridge could not deliver, and
submissions (``submission``) in ``needs_intervention`` (written by the activity that marks them, in its
transaction) and webhook deliveries (``webhook``, reference = the delivery id) whose last attempt failed.
A re-failure re-opens the same record and adds its attempts.

Replays go through each kind's normal path, idempotent by event id (see :func:`replay_dead_letter`);
replays and discards run under the item's tenant (row-level security) and each leaves an audit row
in ``dlq_actions`` (actor, time, reason); the record keeps the latest resolution. The operators'
cross-tenant view (``gradeflow dlq``) reads through the ``SECURITY DEFINER`` functions of
``migrations/0009_dead_letters_all_kinds.sql``; the admin API reads under RLS.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from infra.db.pools import PoolManager

Kind = Literal["outbox", "external_event", "submission", "webhook"]
KINDS: tuple[Kind, ...] = ("outbox", "external_event", "submission", "webhook")
Status = Literal["open", "replayed", "discarded", "resolved"]
STATUSES: tuple[Status, ...] = ("open", "replayed", "discarded", "resolved")

COLUMNS = """
d.id, d.tenant_id, d.kind, d.event_type, d.reference_id, d.status, d.attempts, d.first_error,
d.error AS last_error, d.payload, d.created_at AS first_failed_at, d.last_failed_at, d.updated_at,
d.resolved_by, d.resolved_at, d.resolution_reason,
CASE WHEN d.kind = 'outbox' THEN
    (SELECT count(*) FROM event_outbox e
      WHERE e.tenant_id = d.tenant_id AND e.target_type = d.payload->>'target_type'
        AND e.target_id = d.payload->>'target_id' AND e.id > (d.payload->>'id')::bigint
        AND e.status = 'pending')
ELSE 0 END AS blocking"""
TENANT_LIST_SQL = f"""
SELECT {COLUMNS} FROM dlq_items d
 WHERE (%(kind)s::text IS NULL OR d.kind = %(kind)s) AND (%(status)s::text IS NULL OR d.status = %(status)s)
   AND d.id > %(after)s
 ORDER BY d.id LIMIT %(limit)s"""
TENANT_GET_SQL = f"SELECT {COLUMNS} FROM dlq_items d WHERE d.id = %(id)s"
KIND_SQL = "SELECT kind FROM dlq_items WHERE id = %(id)s"
LOCK_SQL = "SELECT id, kind, status, reference_id, payload FROM dlq_items WHERE id = %(id)s FOR UPDATE"
OPERATOR_LIST_SQL = ("SELECT * FROM dlq_items_find(NULL, %(kind)s, %(status)s, %(tenant)s, %(limit)s, "
                     "%(after)s)")
ITEM_TENANT_SQL = "SELECT dlq_item_tenant(%(id)s) AS tenant_id"
COUNTS_SQL = "SELECT kind, status, items FROM dlq_counts()"
ACTIONS_SQL = """
SELECT id, action, actor, reason, detail, created_at FROM dlq_actions WHERE item_id = %(id)s ORDER BY id"""
RECORD_SQL = """
INSERT INTO dlq_items AS d (tenant_id, kind, event_type, reference_id, error, first_error, attempts, payload)
VALUES (%(tenant)s, %(kind)s, %(event_type)s, %(reference)s, %(error)s, %(error)s, %(attempts)s, %(payload)s)
ON CONFLICT (tenant_id, kind, reference_id) DO UPDATE
   SET status = 'open', event_type = EXCLUDED.event_type, error = EXCLUDED.error, payload = EXCLUDED.payload,
       attempts = CASE WHEN d.status = 'open' AND d.payload->>'failure_id' = EXCLUDED.payload->>'failure_id'
                       THEN d.attempts ELSE d.attempts + EXCLUDED.attempts END,
       last_failed_at = now(), updated_at = now(),
       resolved_by = NULL, resolved_at = NULL, resolution_reason = NULL
RETURNING d.id"""
CLOSE_SQL = """
UPDATE dlq_items SET status = %(status)s, resolved_by = %(actor)s, resolved_at = now(),
                     resolution_reason = %(reason)s, updated_at = now()
 WHERE id = %(id)s"""
CLOSE_REFERENCE_SQL = """
SELECT id FROM dlq_items
 WHERE tenant_id = %(tenant)s AND kind = %(kind)s AND reference_id = %(reference)s AND status = ANY(%(from)s)
   FOR UPDATE"""
AUDIT_SQL = """
INSERT INTO dlq_actions (tenant_id, item_id, action, actor, reason, detail)
VALUES (current_setting('app.current_tenant'), %(id)s, %(action)s, %(actor)s, %(reason)s, %(detail)s)"""
OUTBOX_REPLAY_SQL = """
UPDATE event_outbox SET status = 'pending', attempts = 0, transient_failures = 0, next_attempt_at = now()
 WHERE event_id = %(event_id)s::uuid AND status = 'failed' RETURNING id"""
OUTBOX_DISCARD_SQL = """
UPDATE event_outbox SET status = 'discarded' WHERE event_id = %(event_id)s::uuid AND status = 'failed' RETURNING id"""
WEBHOOK_REPLAY_SQL = """
UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now()
 WHERE id = %(delivery_id)s::bigint AND status = 'failed' RETURNING id"""
NOTIFY_OUTBOX_SQL = "SELECT pg_notify('gradeflow_outbox', current_setting('app.current_tenant'))"

Conn = psycopg.AsyncConnection[dict[str, Any]]
SubmissionRetry = Callable[[str, str, str, str], Awaitable[dict[str, Any]]]
"""``retry(tenant_id, submission_id, actor, reason)``: the operator retry of a submission (it audits the
dead letter itself through :func:`close_by_reference`); returns what to show (run ids)."""
ExternalRepublish = Callable[[dict[str, Any]], Awaitable[str]]
"""Puts an external event back on its stream from the dead letter's payload; returns the stream entry id."""


class DeadLetterError(LookupError):
    """A dead letter is missing, or not in a state the operation applies to."""


class DeadLetterNotFoundError(DeadLetterError):
    """No dead letter with that id (for this tenant)."""


class DeadLetterConflictError(DeadLetterError):
    """The dead letter is not open, or what it names moved on (e.g. its event is no longer failed)."""


class DeadLetterUnavailableError(DeadLetterError):
    """Replaying this kind needs a service the caller did not give (Temporal for a submission, Redis)."""


@dataclass(frozen=True)
class DeadLetter:
    """One ``dlq_items`` record, as an operator sees it."""

    id: int
    """Record id (what ``gradeflow dlq show|replay|discard`` and ``/v1/admin/dlq/{id}`` take)."""
    tenant_id: str
    """Owning tenant."""
    kind: str
    """What gave up: ``outbox``, ``external_event``, ``submission``, ``webhook`` (a delivery)."""
    event_type: str | None
    """What it was doing, e.g. the event type."""
    reference_id: str
    """Id of the thing that failed: the event id, or the submission id."""
    status: Status
    """``open`` until replayed or discarded (a re-failure re-opens it); ``resolved`` if it later succeeded."""
    attempts: int
    """Attempts spent, over every time it failed."""
    first_error: str | None
    """The error of the first time it gave up."""
    last_error: str
    """The latest error."""
    payload: dict[str, Any]
    """What failed (the outbox event with its outbox ``id``; the external event; the submission's error)."""
    first_failed_at: datetime
    """When it first gave up."""
    last_failed_at: datetime
    """When it last gave up."""
    updated_at: datetime
    """Last change of the record."""
    resolved_by: str | None
    """Who replayed, discarded or resolved it last (``None`` while open)."""
    resolved_at: datetime | None
    """When."""
    resolution_reason: str | None
    """Why (the operator's reason)."""
    blocking: int
    """Later events of the same aggregate it holds back (outbox only)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeadLetter:
        """Build from a ``dlq_items_find`` row (or the same columns read under RLS)."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DeadLetterAction:
    """One audited action on a dead letter (``dlq_actions``)."""

    id: int
    action: str
    """``replay``, ``discard`` or ``resolve`` (the thing succeeded later)."""
    actor: str
    """Who: the operator (token subject, ``--actor``) or ``system``."""
    reason: str | None
    """Why, as the operator gave it."""
    detail: dict[str, Any]
    """What the action did (e.g. the run it started, the stream entry it added)."""
    created_at: datetime


async def record_dead_letter(conn: Conn, *, tenant_id: str, kind: Kind, reference_id: str, error: str,
                             payload: dict[str, Any], attempts: int = 1, event_type: str | None = None,
                             failure_id: str | None = None) -> int:
    """Record (or re-open) a dead letter inside the caller's tenant transaction; return its id.

    Args:
        conn: connection in a transaction with ``tenant_id`` set (row-level security).
        tenant_id: owning tenant.
        kind: what gave up.
        reference_id: id of what failed (event id, submission id).
        error: the error that made it give up.
        payload: what an operator needs to understand and replay it.
        attempts: attempts this failure spent (added to the record's count).
        event_type: what it was doing.
        failure_id: id of this failure (e.g. the workflow run); recording the same failure of an open
            record again (a retried activity) does not add its attempts twice.

    """
    body = dict(payload)
    if failure_id is not None:
        body["failure_id"] = failure_id
    cur = await conn.execute(RECORD_SQL, {"tenant": tenant_id, "kind": kind, "event_type": event_type,
                                          "reference": reference_id, "error": error, "attempts": max(0, attempts),
                                          "payload": Jsonb(body)})
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def close_by_reference(conn: Conn, *, tenant_id: str, kind: Kind, reference_id: str, status: Status,
                             actor: str, reason: str | None, detail: dict[str, Any] | None = None,
                             from_statuses: tuple[Status, ...] = ("open",)) -> int | None:
    """Close the dead letter of a reference (e.g. a retried or graded submission) with an audit row.

    Runs in the caller's tenant transaction; returns the record id, ``None`` if there was none in
    ``from_statuses``.
    """
    cur = await conn.execute(CLOSE_REFERENCE_SQL, {"tenant": tenant_id, "kind": kind, "reference": reference_id,
                                                   "from": list(from_statuses)})
    row = await cur.fetchone()
    if row is None:
        return None
    await _close(conn, int(row["id"]), status, actor, reason, detail or {})
    return int(row["id"])


async def _close(conn: Conn, item_id: int, status: Status, actor: str, reason: str | None,
                 detail: dict[str, Any]) -> None:
    action = {"replayed": "replay", "discarded": "discard"}.get(status, "resolve")
    await conn.execute(CLOSE_SQL, {"id": item_id, "status": status, "actor": actor, "reason": reason})
    await conn.execute(AUDIT_SQL, {"id": item_id, "action": action, "actor": actor, "reason": reason,
                                   "detail": Jsonb(detail)})


async def list_dead_letters(pools: PoolManager, *, tenant_id: str | None = None, kind: str | None = None,
                            status: Status | None = "open", limit: int = 100, after_id: int = 0) -> list[DeadLetter]:
    """Dead letters, oldest first.

    Args:
        pools: pool manager.
        tenant_id: this tenant's, read under its RLS context; ``None``: every tenant's (operators).
        kind: only this kind; ``None`` for all.
        status: only this status; ``None`` for all.
        limit: at most this many.
        after_id: only records with a larger id (paging).

    """
    params = {"kind": kind, "status": status, "tenant": tenant_id, "limit": limit, "after": after_id}
    if tenant_id is None:
        async with pools.connection() as conn:
            rows = await (await conn.execute(OPERATOR_LIST_SQL, params)).fetchall()
    else:
        async with pools.transaction(tenant_id) as conn:
            rows = await (await conn.execute(TENANT_LIST_SQL, params)).fetchall()
    return [DeadLetter.from_row(row) for row in rows]


async def item_tenant(pools: PoolManager, item_id: int) -> str:
    """The tenant a dead letter belongs to (operators); :class:`DeadLetterNotFoundError` if none."""
    async with pools.connection() as conn:
        row = await (await conn.execute(ITEM_TENANT_SQL, {"id": item_id})).fetchone()
    if row is None or row["tenant_id"] is None:
        raise DeadLetterNotFoundError(f"dead letter {item_id} not found")
    return str(row["tenant_id"])


async def get_dead_letter(pools: PoolManager, item_id: int, *, tenant_id: str | None = None) -> DeadLetter:
    """One dead letter (of ``tenant_id``, else of whichever tenant owns it); raise if there is none."""
    tenant = tenant_id or await item_tenant(pools, item_id)
    async with pools.transaction(tenant) as conn:
        row = await (await conn.execute(TENANT_GET_SQL, {"id": item_id})).fetchone()
    if row is None:
        raise DeadLetterNotFoundError(f"dead letter {item_id} not found")
    return DeadLetter.from_row(row)


async def dead_letter_actions(pools: PoolManager, item_id: int, *, tenant_id: str) -> list[DeadLetterAction]:
    """The audited actions on a dead letter, oldest first."""
    async with pools.transaction(tenant_id) as conn:
        rows = await (await conn.execute(ACTIONS_SQL, {"id": item_id})).fetchall()
    return [DeadLetterAction(**row) for row in rows]


async def dead_letter_counts(pools: PoolManager) -> dict[tuple[str, str], int]:
    """Records by (kind, status) over every tenant (for the ``dead letters by kind`` metric)."""
    async with pools.connection() as conn:
        rows = await (await conn.execute(COUNTS_SQL)).fetchall()
    return {(row["kind"], row["status"]): int(row["items"]) for row in rows}


async def _lock_open(conn: Conn, item_id: int) -> dict[str, Any]:
    row = await (await conn.execute(LOCK_SQL, {"id": item_id})).fetchone()
    if row is None:
        raise DeadLetterNotFoundError(f"dead letter {item_id} not found")
    if row["status"] != "open":
        raise DeadLetterConflictError(f"dead letter {item_id} is {row['status']}, not open")
    return row


async def replay_dead_letter(pools: PoolManager, item_id: int, *, actor: str, reason: str | None = None,
                             tenant_id: str | None = None, retry: SubmissionRetry | None = None,
                             republish: ExternalRepublish | None = None) -> DeadLetter:
    """Replay an open dead letter through its kind's normal path; audited.

    * ``outbox``: the event goes back to ``pending`` with a fresh attempt budget (the relay publishes
      it once: consumers dedupe by event id).
    * ``external_event``: the event is put back on its stream with the same event id (the workflow
      records an event id once) by ``republish``.
    * ``submission``: the operator retry (``retry``): a new grading run that resumes from the last
      checkpoint.
    * ``webhook``: the delivery goes back to ``pending`` with a fresh schedule (sent again with the
      same ``webhook-id``; not while its endpoint is disabled).

    A replay that fails again re-opens the same record.

    Args:
        pools: pool manager.
        item_id: the record.
        actor: who replays it (audited).
        reason: why (audited).
        tenant_id: the caller's tenant (the admin API): another tenant's record is "not found".
            ``None``: whichever tenant owns it (operators).
        retry: how to retry a submission (needs Temporal); without it, submissions cannot be replayed.
        republish: how to re-publish an external event (needs Redis).

    Raises:
        DeadLetterNotFoundError: no such record (for this tenant).
        DeadLetterConflictError: not open, its outbox event is no longer failed, or its kind cannot be
            replayed.
        DeadLetterUnavailableError: replaying its kind needs ``retry`` / ``republish``.

    """
    tenant = tenant_id or await item_tenant(pools, item_id)
    kind = await _kind_of(pools, tenant, item_id)
    if kind == "submission":
        if retry is None:
            raise DeadLetterUnavailableError(f"dead letter {item_id} is a submission: replaying it needs Temporal")
        async with pools.transaction(tenant) as conn:
            row = await _lock_open(conn, item_id)
        await retry(tenant, row["reference_id"], actor, reason or "")  # audits the record itself
        return await get_dead_letter(pools, item_id, tenant_id=tenant)
    async with pools.transaction(tenant) as conn:
        row = await _lock_open(conn, item_id)
        if kind == "outbox":
            if await (await conn.execute(OUTBOX_REPLAY_SQL, {"event_id": row["reference_id"]})).fetchone() is None:
                raise DeadLetterConflictError(f"dead letter {item_id}: event {row['reference_id']} is no longer failed")
            await conn.execute(NOTIFY_OUTBOX_SQL)
            detail: dict[str, Any] = {"event_id": row["reference_id"]}
        elif kind == "webhook":
            cur = await conn.execute(WEBHOOK_REPLAY_SQL, {"delivery_id": row["reference_id"]})
            if await cur.fetchone() is None:
                raise DeadLetterConflictError(f"dead letter {item_id}: webhook delivery {row['reference_id']} is "
                                              "no longer failed")
            detail = {"delivery_id": int(row["reference_id"]), "event_id": row["payload"].get("event_id")}
        elif kind == "external_event":
            if republish is None:
                raise DeadLetterUnavailableError(f"dead letter {item_id} is an external event: replaying it needs "
                                                 "Redis")
            detail = {"event_id": row["reference_id"], "stream_entry_id": await republish(row["payload"])}
        else:
            raise DeadLetterConflictError(f"dead letter {item_id}: {kind} dead letters cannot be replayed yet")
        await _close(conn, item_id, "replayed", actor, reason, detail)
    return await get_dead_letter(pools, item_id, tenant_id=tenant)


async def discard_dead_letter(pools: PoolManager, item_id: int, *, actor: str, reason: str | None = None,
                              tenant_id: str | None = None) -> DeadLetter:
    """Give an open dead letter up for good; audited.

    An outbox event becomes ``discarded`` so the later events of its aggregate go on; an external
    event is dropped; a submission stays in ``needs_intervention`` (nobody will retry it from here).

    Raises:
        DeadLetterNotFoundError: no such record (for this tenant).
        DeadLetterConflictError: not open, or its outbox event is no longer failed.

    """
    tenant = tenant_id or await item_tenant(pools, item_id)
    async with pools.transaction(tenant) as conn:
        row = await _lock_open(conn, item_id)
        detail: dict[str, Any] = {}
        if row["kind"] == "outbox":
            if await (await conn.execute(OUTBOX_DISCARD_SQL, {"event_id": row["reference_id"]})).fetchone() is None:
                raise DeadLetterConflictError(f"dead letter {item_id}: event {row['reference_id']} is no longer failed")
            await conn.execute(NOTIFY_OUTBOX_SQL)
            detail = {"event_id": row["reference_id"]}
        await _close(conn, item_id, "discarded", actor, reason, detail)
    return await get_dead_letter(pools, item_id, tenant_id=tenant)


async def _kind_of(pools: PoolManager, tenant_id: str, item_id: int) -> str:
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(KIND_SQL, {"id": item_id})).fetchone()
    if row is None:
        raise DeadLetterNotFoundError(f"dead letter {item_id} not found")
    return str(row["kind"])
