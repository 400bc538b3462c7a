"""SQL of regrade requests: a submitter asks for one question to be graded again; a reviewer resolves it.

:func:`create_request` stores an ``open`` request with a ``review_log`` audit row and the outbox
event ``regrade_request.created`` in one transaction. Accepting goes through the review saga: its DB
step (:func:`infra.stores.review.apply_override`) calls :func:`accept_in` in the override's own
transaction (the request is ``accepted`` exactly when the new score commits) and its compensation
calls :func:`reopen_in`. :func:`reject_request` closes a request with the reviewer's reason (audit
row and ``regrade_request.resolved`` in the same transaction).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from infra.constants import EventType, SubmissionStatus
from infra.db.pools import PoolManager
from infra.events.causes import GRADE_CAUSES, submission_flow
from infra.events.outbox import add_event, latest_event_id
from infra.stores.exams import parse_uuid

COLUMNS = """id::text AS id, submission_id::text AS submission_id, question_id, reason, requested_by, status,
       resolved_by, resolution_reason, old_score, new_score, saga_id::text AS saga_id, created_at, resolved_at"""
SELECT_TARGET_SQL = """
SELECT s.status, s.submitted_by, r.score
  FROM submissions s LEFT JOIN grading_results r ON r.submission_id = s.id AND r.question_id = %(question_id)s
 WHERE s.id = %(submission_id)s"""
INSERT_REQUEST_SQL = f"""
INSERT INTO regrade_requests (id, tenant_id, submission_id, question_id, reason, requested_by)
VALUES (%(id)s, %(tenant_id)s, %(submission_id)s, %(question_id)s, %(reason)s, %(requested_by)s)
RETURNING {COLUMNS}"""
SELECT_REQUEST_SQL = f"SELECT {COLUMNS} FROM regrade_requests WHERE id = %s"
LIST_REQUESTS_SQL = f"""
SELECT {COLUMNS} FROM regrade_requests
 WHERE status = %(status)s AND (created_at, id) > (%(after_at)s, %(after_id)s)
 ORDER BY created_at, id LIMIT %(limit)s"""
RESOLVE_SQL = f"""
UPDATE regrade_requests
   SET status = %(status)s, resolved_by = %(actor)s, resolution_reason = %(reason)s, old_score = %(old)s,
       new_score = %(new)s, saga_id = %(saga_id)s, resolved_at = now()
 WHERE id = %(id)s AND status = 'open'
RETURNING {COLUMNS}"""
REOPEN_SQL = """
UPDATE regrade_requests
   SET status = 'open', resolved_by = NULL, resolution_reason = NULL, old_score = NULL, new_score = NULL,
       saga_id = NULL, resolved_at = NULL
 WHERE id = %(id)s AND status = 'accepted' AND saga_id = %(saga_id)s"""
INSERT_AUDIT_SQL = """
INSERT INTO review_log (tenant_id, submission_id, question_id, actor_id, action, before, after, reason)
VALUES (%(tenant_id)s, %(submission_id)s, %(question_id)s, %(actor_id)s, %(action)s, %(before)s, %(after)s,
        %(reason)s)"""
FIRST_CURSOR = (datetime(1970, 1, 1).astimezone(), "00000000-0000-0000-0000-000000000000")


class RequestNotFoundError(LookupError):
    """No such request (or submission) for this tenant."""


class RequestRefusedError(ValueError):
    """The request cannot be made: ``field`` names what is wrong (422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class RequestConflictError(RuntimeError):
    """The request or its submission is in a state that refuses this (409)."""


class NotSubmitterError(PermissionError):
    """Only the submitter of a submission may ask for its regrade (403)."""


async def _request_flow(conn: Any, tenant_id: str, request_id: str, submission_id: str) -> dict[str, str | None]:
    """Envelope of a resolution: the submission's flow, caused by the request's ``regrade_request.created``."""
    cause = await latest_event_id(conn, tenant_id=tenant_id, target_type="regrade_request", target_id=str(request_id),
                                  event_types=(EventType.REGRADE_REQUESTED.value,))
    return {"correlation_id": str(submission_id), "causation_id": cause}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("old_score", "new_score"):
        out[key] = None if out[key] is None else float(out[key])
    for key in ("created_at", "resolved_at"):
        out[key] = None if out[key] is None else out[key].isoformat()
    return out


def _num(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def encode_cursor(row: dict[str, Any]) -> str:
    """Opaque cursor after ``row`` (its ``created_at`` and ``id``)."""
    return base64.urlsafe_b64encode(f"{row['created_at']}|{row['id']}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at, id)`` of a cursor from :func:`encode_cursor`; ``ValueError`` for anything else."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    at, _, rid = raw.partition("|")
    parsed = datetime.fromisoformat(at)
    if parsed.tzinfo is None or parse_uuid(rid) is None:
        raise ValueError("not a cursor of this list")
    return parsed, str(uuid.UUID(rid))


async def create_request(pools: PoolManager, tenant_id: str, submission_id: str, *, question_id: str, reason: str,
                         requested_by: str, must_own: bool, trace_id: str | None = None) -> dict[str, Any]:
    """Store an open request for one question of a completed submission, audited, with its outbox event.

    Raises:
        RequestNotFoundError: no such submission for this tenant.
        NotSubmitterError: ``must_own`` and the caller did not submit it.
        RequestConflictError: the submission is not ``completed``, or an open request exists for the question.
        RequestRefusedError: the question has no grade (field ``question_id``).

    """
    sid = parse_uuid(submission_id)
    if sid is None:
        raise RequestNotFoundError(submission_id)
    request_id = str(uuid.uuid4())
    try:
        async with pools.transaction(tenant_id) as conn:
            target = await (await conn.execute(SELECT_TARGET_SQL, {"submission_id": sid,
                                                                   "question_id": question_id})).fetchone()
            if target is None:
                raise RequestNotFoundError(submission_id)
            if must_own and target["submitted_by"] != requested_by:
                raise NotSubmitterError(f"submission {submission_id} was not submitted by {requested_by}")
            if target["status"] != SubmissionStatus.COMPLETED:
                raise RequestConflictError(f"submission {submission_id} is {target['status']}, not completed")
            if target["score"] is None:
                raise RequestRefusedError("question_id", f"submission has no grade for question {question_id!r}")
            row = await (await conn.execute(INSERT_REQUEST_SQL, {
                "id": request_id, "tenant_id": tenant_id, "submission_id": sid, "question_id": question_id,
                "reason": reason, "requested_by": requested_by})).fetchone()
            assert row is not None
            await conn.execute(INSERT_AUDIT_SQL, {
                "tenant_id": tenant_id, "submission_id": sid, "question_id": question_id, "actor_id": requested_by,
                "action": "regrade_requested", "before": Jsonb({"score": _num(target["score"])}),
                "after": Jsonb({"request_id": request_id, "status": "open"}), "reason": reason})
            await add_event(conn, tenant_id=tenant_id, event_type=EventType.REGRADE_REQUESTED.value,
                            target_type="regrade_request", target_id=request_id, version=1, actor_id=requested_by,
                            trace_id=trace_id, **await submission_flow(conn, tenant_id, str(sid), GRADE_CAUSES),
                            payload={"submission_id": str(sid), "question_id": question_id, "reason": reason,
                                     "status": "open", "score": _num(target["score"])})
    except psycopg.errors.UniqueViolation:
        raise RequestConflictError(f"an open regrade request exists for question {question_id!r}") from None
    return _row(row)


async def load_request(pools: PoolManager, tenant_id: str, request_id: str) -> dict[str, Any] | None:
    """A request (JSON-friendly) or ``None`` when unknown to this tenant."""
    rid = parse_uuid(request_id)
    if rid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(SELECT_REQUEST_SQL, (rid,))).fetchone()
    return None if row is None else _row(row)


async def list_requests(pools: PoolManager, tenant_id: str, *, status: str, limit: int,
                        cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of requests in ``status``, oldest first, and the cursor of the next page (``None``: last page).

    Raises:
        ValueError: ``cursor`` is not one of this list's.

    """
    after_at, after_id = decode_cursor(cursor) if cursor else FIRST_CURSOR
    async with pools.transaction(tenant_id) as conn:
        rows = await (await conn.execute(LIST_REQUESTS_SQL, {
            "status": status, "after_at": after_at, "after_id": after_id, "limit": limit + 1})).fetchall()
    page = [dict(r) for r in rows[:limit]]
    nxt = encode_cursor({"created_at": page[-1]["created_at"].isoformat(), "id": page[-1]["id"]}) \
        if len(rows) > limit else None
    return [_row(r) for r in page], nxt


async def accept_in(conn: Any, tenant_id: str, request_id: str, *, actor_id: str, reason: str | None,
                    old_score: float | None, new_score: float, saga_id: str, trace_id: str | None) -> None:
    """Mark an open request ``accepted`` inside the override's transaction, with its event.

    Raises:
        RequestConflictError: the request is no longer open (resolved meanwhile).

    """
    row = await (await conn.execute(RESOLVE_SQL, {
        "id": request_id, "status": "accepted", "actor": actor_id, "reason": reason, "old": old_score,
        "new": new_score, "saga_id": saga_id})).fetchone()
    if row is None:
        raise RequestConflictError(f"regrade request {request_id} is no longer open")
    await add_event(conn, tenant_id=tenant_id, event_type=EventType.REGRADE_REQUEST_RESOLVED.value,
                    target_type="regrade_request", target_id=request_id, version=2, actor_id=actor_id,
                    trace_id=trace_id, **await _request_flow(conn, tenant_id, request_id, row["submission_id"]),
                    payload={"submission_id": row["submission_id"], "question_id": row["question_id"],
                             "status": "accepted", "old_score": old_score, "new_score": new_score,
                             "saga_id": saga_id, "reason": reason})


async def reopen_in(conn: Any, request_id: str, *, saga_id: str) -> None:
    """Compensation of :func:`accept_in`: the request is open again (only if this saga accepted it)."""
    await conn.execute(REOPEN_SQL, {"id": request_id, "saga_id": saga_id})


async def reject_request(pools: PoolManager, tenant_id: str, request_id: str, *, actor_id: str, reason: str,
                         trace_id: str | None = None) -> dict[str, Any]:
    """Close an open request as ``rejected`` with the reviewer's reason (audited, outbox event).

    Raises:
        RequestNotFoundError: no such request for this tenant.
        RequestConflictError: the request is not open.

    """
    rid = parse_uuid(request_id)
    if rid is None:
        raise RequestNotFoundError(request_id)
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(RESOLVE_SQL, {
            "id": rid, "status": "rejected", "actor": actor_id, "reason": reason, "old": None, "new": None,
            "saga_id": None})).fetchone()
        if row is None:
            existing = await (await conn.execute(SELECT_REQUEST_SQL, (rid,))).fetchone()
            if existing is None:
                raise RequestNotFoundError(request_id)
            raise RequestConflictError(f"regrade request {request_id} is already {existing['status']}")
        await conn.execute(INSERT_AUDIT_SQL, {
            "tenant_id": tenant_id, "submission_id": row["submission_id"], "question_id": row["question_id"],
            "actor_id": actor_id, "action": "regrade_request_rejected", "before": Jsonb({"status": "open"}),
            "after": Jsonb({"request_id": str(rid), "status": "rejected"}), "reason": reason})
        await add_event(conn, tenant_id=tenant_id, event_type=EventType.REGRADE_REQUEST_RESOLVED.value,
                        target_type="regrade_request", target_id=str(rid), version=2, actor_id=actor_id,
                        trace_id=trace_id, **await _request_flow(conn, tenant_id, str(rid), row["submission_id"]),
                        payload={"submission_id": row["submission_id"], "question_id": row["question_id"],
                                 "status": "rejected", "reason": reason})
    return _row(row)
