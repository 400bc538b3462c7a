"""SQL of reviews: the override target, the saga's DB step and its compensation, audit and saga rows.

:func:`apply_override` is step 1 of the review saga (:mod:`infra.sagas.review`): in one transaction
it updates the overridden ``grading_results`` rows, the submission total (and version), writes one
``review_log`` row per question (before/after) and the outbox event ``submission.reviewed``.
:func:`restore_override` compensates it: the previous rows come back exactly, guarded by the
submission version so a later change is never overwritten. ``saga_transactions`` rows record every
step and compensation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from infra.constants import EventType, SubmissionStatus
from infra.db.pools import PoolManager
from infra.events.causes import GRADE_CAUSES, REVIEW_CAUSES, submission_flow
from infra.events.outbox import add_event
from infra.stores import history, regrade_requests
from infra.stores.exams import parse_uuid

SELECT_TARGET_SQL = """
SELECT id, status, total, version, workflow_id, trace_id, updated_at FROM submissions WHERE id = %s"""
LOCK_TARGET_SQL = SELECT_TARGET_SQL + " FOR UPDATE"
SELECT_RESULTS_SQL = """
SELECT question_id, score, max_points, feedback, overridden, flagged, updated_at
  FROM grading_results WHERE submission_id = %s ORDER BY question_id"""
LOCK_RESULTS_SQL = SELECT_RESULTS_SQL + " FOR UPDATE"
OVERRIDE_RESULT_SQL = """
UPDATE grading_results
   SET score = %(score)s, feedback = COALESCE(%(feedback)s, feedback), overridden = true, flagged = false,
       updated_at = now()
 WHERE submission_id = %(submission_id)s AND question_id = %(question_id)s
RETURNING question_id, score, max_points, feedback, overridden, flagged, updated_at"""
BUMP_TOTAL_SQL = """
UPDATE submissions
   SET total = (SELECT COALESCE(sum(score), 0) FROM grading_results WHERE submission_id = %(id)s),
       version = version + 1, updated_at = now()
 WHERE id = %(id)s
RETURNING total, version"""
RESTORE_RESULT_SQL = """
UPDATE grading_results
   SET score = %(score)s, feedback = %(feedback)s, overridden = %(overridden)s, flagged = %(flagged)s,
       updated_at = %(updated_at)s
 WHERE submission_id = %(submission_id)s AND question_id = %(question_id)s"""
RESTORE_SUBMISSION_SQL = """
UPDATE submissions SET total = %(total)s, version = %(version)s, updated_at = %(updated_at)s
 WHERE id = %(id)s AND version = %(expected)s
RETURNING id"""
INSERT_REVIEW_LOG_SQL = """
INSERT INTO review_log (tenant_id, submission_id, question_id, actor_id, action, before, after, reason)
VALUES (%(tenant_id)s, %(submission_id)s, %(question_id)s, %(actor_id)s, %(action)s, %(before)s, %(after)s,
        %(reason)s)"""
INSERT_SAGA_SQL = """
INSERT INTO saga_transactions (id, tenant_id, saga_type, status, steps)
VALUES (%(id)s, %(tenant_id)s, %(saga_type)s, 'running', %(steps)s)"""
RECORD_SAGA_STEP_SQL = """
UPDATE saga_transactions
   SET steps = steps || %(entry)s, status = COALESCE(%(status)s, status), error = COALESCE(%(error)s, error),
       updated_at = now()
 WHERE id = %(id)s"""
SELECT_SAGA_SQL = "SELECT id, saga_type, status, steps, error FROM saga_transactions WHERE id = %s"

RESULT_FIELDS = ("score", "feedback", "overridden", "flagged")
"""Result columns a review changes (and the audit shows)."""


class ReviewConflictError(RuntimeError):
    """The submission changed (status or version) between the check and the write."""


@dataclass(frozen=True)
class ReviewTarget:
    """What a review needs to know about a submission before deciding how to apply it."""

    submission_id: str
    status: str
    version: int
    workflow_id: str
    trace_id: str
    results: dict[str, dict[str, Any]]
    """question_id -> result row (``score``, ``max_points``, ``feedback``, ...)."""


@dataclass(frozen=True)
class AppliedOverride:
    """What step 1 changed: the exact previous rows (for the compensation) and the new state."""

    before_submission: dict[str, Any]
    """``total``, ``version``, ``updated_at`` before the override."""
    before_results: list[dict[str, Any]]
    """The overridden result rows as they were."""
    after_results: list[dict[str, Any]]
    """The same rows after the override."""
    total_before: float | None
    total_after: float | None
    version_after: int
    source: history.Source = "review"
    """What the score history calls this change (``review``, or ``request`` for an accepted regrade request)."""
    request_id: str | None = None
    """The regrade request the override accepted, if any."""


def _audit(row: dict[str, Any]) -> dict[str, Any]:
    return {k: float(row[k]) if isinstance(row[k], Decimal) else row[k] for k in RESULT_FIELDS}


def _num(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


async def _one(cur: Any) -> dict[str, Any]:
    """The row an UPDATE of a locked row returned (a missing one means it vanished meanwhile)."""
    row = await cur.fetchone()
    if row is None:
        raise ReviewConflictError("the row being reviewed vanished")
    return dict(row)


async def load_target(pools: PoolManager, tenant_id: str, submission_id: str) -> ReviewTarget | None:
    """Read a submission's status, version and results (``None`` when unknown to this tenant)."""
    sid = parse_uuid(submission_id)
    if sid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(SELECT_TARGET_SQL, (sid,))).fetchone()
        if row is None:
            return None
        results = await (await conn.execute(SELECT_RESULTS_SQL, (sid,))).fetchall()
    return ReviewTarget(str(sid), row["status"], int(row["version"]), row["workflow_id"], row["trace_id"],
                        {r["question_id"]: dict(r) for r in results})


async def apply_override(pools: PoolManager, tenant_id: str, submission_id: str, *, actor_id: str,
                         overrides: dict[str, tuple[float, str | None]], reason: str | None, saga_id: str,
                         expected_version: int, trace_id: str | None = None, source: history.Source = "review",
                         request_id: str | None = None) -> AppliedOverride:
    """Step 1 of the review saga: results, total, audit rows and ``submission.reviewed`` in one transaction.

    The same transaction writes a ``score_history`` row per changed score (``source``) and, with
    ``request_id``, marks that regrade request ``accepted`` (:func:`infra.stores.regrade_requests.accept_in`).

    Args:
        pools: pool manager.
        tenant_id: owning tenant (row-level security).
        submission_id: a ``completed`` submission.
        actor_id: the reviewer.
        overrides: question_id -> (score, feedback or ``None`` to keep it).
        reason: the reviewer's reason, stored in the audit rows.
        saga_id: the saga this write belongs to (in the audit rows and the event).
        expected_version: submission version the caller validated against.
        trace_id: request trace id for the event.
        source: history source of the change.
        request_id: the regrade request this override accepts.

    Raises:
        ReviewConflictError: the submission is no longer ``completed`` at ``expected_version``, a
            question has no result, or the regrade request is no longer open; nothing is written.

    """
    async with pools.transaction(tenant_id) as conn:
        sub = await (await conn.execute(LOCK_TARGET_SQL, (submission_id,))).fetchone()
        if sub is None or sub["status"] != SubmissionStatus.COMPLETED or sub["version"] != expected_version:
            raise ReviewConflictError(f"submission {submission_id} changed since it was checked")
        rows = {r["question_id"]: dict(r) for r in
                await (await conn.execute(LOCK_RESULTS_SQL, (submission_id,))).fetchall()}
        missing = sorted(set(overrides) - set(rows))
        if missing:
            raise ReviewConflictError(f"no grading result for {missing}")
        before = [rows[q] for q in sorted(overrides)]
        after = []
        for qid in sorted(overrides):
            score, feedback = overrides[qid]
            cur = await conn.execute(OVERRIDE_RESULT_SQL, {"submission_id": submission_id, "question_id": qid,
                                                           "score": score, "feedback": feedback})
            after.append(await _one(cur))
        bumped = await _one(await conn.execute(BUMP_TOTAL_SQL, {"id": submission_id}))
        await history.record_changes(
            conn, tenant_id=tenant_id, submission_id=submission_id, source=source,
            changes=[history.ScoreChange(o["question_id"], float(o["score"]), float(n["score"]))
                     for o, n in zip(before, after, strict=True)],
            submission_version=int(bumped["version"]), actor_id=actor_id, reason=reason, trace_id=trace_id)
        if request_id is not None:
            first_old, first_new = before[0], after[0]
            try:
                await regrade_requests.accept_in(
                    conn, tenant_id, request_id, actor_id=actor_id, reason=reason,
                    old_score=float(first_old["score"]), new_score=float(first_new["score"]), saga_id=saga_id,
                    trace_id=trace_id)
            except regrade_requests.RequestConflictError as exc:
                raise ReviewConflictError(str(exc)) from exc
        for old, new in zip(before, after, strict=True):
            await conn.execute(INSERT_REVIEW_LOG_SQL, {
                "tenant_id": tenant_id, "submission_id": submission_id, "question_id": old["question_id"],
                "actor_id": actor_id, "action": "override", "reason": reason,
                "before": Jsonb({**_audit(old), "total": _num(sub["total"])}),
                "after": Jsonb({**_audit(new), "total": _num(bumped["total"]), "saga_id": saga_id})})
        await add_event(conn, tenant_id=tenant_id, event_type=EventType.SUBMISSION_REVIEWED.value,
                        target_type="submission", target_id=submission_id, version=int(bumped["version"]),
                        actor_id=actor_id, trace_id=trace_id,
                        **await submission_flow(conn, tenant_id, submission_id, GRADE_CAUSES),
                        payload={"status": sub["status"], "saga_id": saga_id, "reason": reason,
                                 "total_before": _num(sub["total"]), "total": _num(bumped["total"]),
                                 "overrides": {n["question_id"]: _audit(n) for n in after}})
    return AppliedOverride(
        before_submission={"total": sub["total"], "version": sub["version"], "updated_at": sub["updated_at"]},
        before_results=before, after_results=after, total_before=_num(sub["total"]),
        total_after=_num(bumped["total"]), version_after=int(bumped["version"]), source=source,
        request_id=request_id)


async def restore_override(pools: PoolManager, tenant_id: str, submission_id: str, applied: AppliedOverride, *,
                           actor_id: str, saga_id: str, error: str, trace_id: str | None = None) -> None:
    """Compensate :func:`apply_override`: put the previous rows back exactly and audit it.

    Raises:
        ReviewConflictError: the submission changed after the override (its version moved on);
            nothing is restored, so the saga needs manual intervention.

    """
    before = applied.before_submission
    async with pools.transaction(tenant_id) as conn:
        restored = await (await conn.execute(RESTORE_SUBMISSION_SQL, {
            "id": submission_id, "total": before["total"], "version": before["version"],
            "updated_at": before["updated_at"], "expected": applied.version_after})).fetchone()
        if restored is None:
            raise ReviewConflictError(
                f"submission {submission_id} changed after the override (version is no longer "
                f"{applied.version_after}); not restoring")
        await history.record_changes(
            conn, tenant_id=tenant_id, submission_id=submission_id, source=applied.source,
            changes=[history.ScoreChange(o["question_id"], float(n["score"]), float(o["score"]))
                     for o, n in zip(applied.before_results, applied.after_results, strict=True)],
            submission_version=int(before["version"]), actor_id=actor_id,
            reason=f"saga {saga_id} compensated: {error}", trace_id=trace_id)
        if applied.request_id is not None:
            await regrade_requests.reopen_in(conn, applied.request_id, saga_id=saga_id)
        for old, new in zip(applied.before_results, applied.after_results, strict=True):
            await conn.execute(RESTORE_RESULT_SQL, {"submission_id": submission_id, **old})
            await conn.execute(INSERT_REVIEW_LOG_SQL, {
                "tenant_id": tenant_id, "submission_id": submission_id, "question_id": old["question_id"],
                "actor_id": actor_id, "action": "override_compensated",
                "reason": f"saga {saga_id} compensated: {error}",
                "before": Jsonb({**_audit(new), "total": applied.total_after}),
                "after": Jsonb({**_audit(old), "total": applied.total_before, "saga_id": saga_id})})
        await add_event(conn, tenant_id=tenant_id, event_type=EventType.SUBMISSION_REVIEWED.value,
                        target_type="submission", target_id=submission_id, version=int(before["version"]),
                        actor_id=actor_id, trace_id=trace_id,
                        **await submission_flow(conn, tenant_id, submission_id, REVIEW_CAUSES),
                        payload={"saga_id": saga_id, "compensation": True, "error": error,
                                 "total": applied.total_before})


async def audit_review(pools: PoolManager, tenant_id: str, submission_id: str, *, actor_id: str, action: str,
                       before: dict[str, Any], after: dict[str, Any], reason: str | None) -> None:
    """Write one ``review_log`` row (a review applied by the grading workflow)."""
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_REVIEW_LOG_SQL, {
            "tenant_id": tenant_id, "submission_id": submission_id, "question_id": None, "actor_id": actor_id,
            "action": action, "before": Jsonb(before), "after": Jsonb(after), "reason": reason})


def _entry(entry: dict[str, Any]) -> Jsonb:
    return Jsonb([json.loads(json.dumps(entry, default=_json_default))])


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def start_saga(pools: PoolManager, tenant_id: str, saga_id: str, saga_type: str,
                     context: dict[str, Any]) -> None:
    """Insert a ``running`` saga row whose first step entry is ``context``."""
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_SAGA_SQL, {"id": saga_id, "tenant_id": tenant_id, "saga_type": saga_type,
                                             "steps": _entry(context)})


async def record_saga_step(pools: PoolManager, tenant_id: str, saga_id: str, entry: dict[str, Any], *,
                           status: str | None = None, error: str | None = None) -> None:
    """Append one step entry to a saga row, optionally moving its status and recording an error."""
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(RECORD_SAGA_STEP_SQL, {"id": saga_id, "entry": _entry(entry), "status": status,
                                                  "error": error})


async def load_saga(pools: PoolManager, tenant_id: str, saga_id: str) -> dict[str, Any] | None:
    """Return a saga row (``id``, ``saga_type``, ``status``, ``steps``, ``error``) or ``None``."""
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(SELECT_SAGA_SQL, (saga_id,))).fetchone()
    return None if row is None else {**row, "id": str(row["id"])}
