"""Operators' retries of submissions in ``needs_intervention``: the check and the audit trail.

:func:`record_retry` checks that a submission may be retried and writes, in one transaction, the
``review_log`` row (who, when, why, from which run), the outbox event ``submission.retried`` and the
``replayed`` mark (with its audit row) on the submission's dead letter.
Starting the new workflow run is the caller's (:mod:`infra.temporal.retry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from infra.constants import EventType, SubmissionStatus
from infra.db.pools import PoolManager
from infra.events.causes import ANY_CAUSE, submission_flow
from infra.events.dead_letters import close_by_reference
from infra.events.outbox import add_event
from infra.stores.exams import parse_uuid
from infra.stores.review import INSERT_REVIEW_LOG_SQL

SELECT_SUBMISSION_SQL = """
SELECT id::text AS id, exam_id::text AS exam_id, status, error, workflow_id, trace_id, version
  FROM submissions WHERE id = %s"""
LOCK_SUBMISSION_SQL = SELECT_SUBMISSION_SQL + " FOR UPDATE"
RETRY_ACTION = "retry_requested"
"""``review_log.action`` of an operator's retry."""


class SubmissionNotFoundError(LookupError):
    """No such submission for this tenant."""


class NotRetryableError(RuntimeError):
    """The submission is not in ``needs_intervention``."""

    def __init__(self, status: str) -> None:
        """Record the status that refused the retry."""
        super().__init__(f"a submission in status {status!r} cannot be retried (only needs_intervention)")
        self.status = status


@dataclass(frozen=True)
class RetryTarget:
    """What the retry needs to start a new run of the submission's workflow."""

    submission_id: str
    exam_id: str
    workflow_id: str
    trace_id: str
    error: str | None
    """The error that sent it to intervention."""


def _retryable(row: dict[str, Any] | None, submission_id: str) -> dict[str, Any]:
    if row is None:
        raise SubmissionNotFoundError(submission_id)
    if row["status"] != SubmissionStatus.NEEDS_INTERVENTION:
        raise NotRetryableError(row["status"])
    return row


async def check_retryable(pools: PoolManager, tenant_id: str, submission_id: str) -> None:
    """Raise unless this tenant's submission exists and is in ``needs_intervention``.

    Checked before anything else, so nothing about another tenant's workflow is ever looked at.
    """
    sid = parse_uuid(submission_id)
    if sid is None:
        raise SubmissionNotFoundError(submission_id)
    async with pools.transaction(tenant_id) as conn:
        _retryable(await (await conn.execute(SELECT_SUBMISSION_SQL, (sid,))).fetchone(), submission_id)


async def record_retry(pools: PoolManager, tenant_id: str, submission_id: str, *, actor_id: str,
                       reason: str, previous_run_id: str | None) -> RetryTarget:
    """Check the submission can be retried and audit the retry (review_log + outbox, one transaction).

    Raises:
        SubmissionNotFoundError: No such submission for this tenant.
        NotRetryableError: It is not in ``needs_intervention``.

    """
    sid = parse_uuid(submission_id)
    if sid is None:
        raise SubmissionNotFoundError(submission_id)
    async with pools.transaction(tenant_id) as conn:
        row = _retryable(await (await conn.execute(LOCK_SUBMISSION_SQL, (sid,))).fetchone(), submission_id)
        await conn.execute(INSERT_REVIEW_LOG_SQL, {
            "tenant_id": tenant_id, "submission_id": sid, "question_id": None, "actor_id": actor_id,
            "action": RETRY_ACTION, "reason": reason,
            "before": Jsonb({"status": row["status"], "error": row["error"], "run_id": previous_run_id}),
            "after": Jsonb({"status": SubmissionStatus.GRADING})})
        await add_event(conn, tenant_id=tenant_id, event_type=EventType.SUBMISSION_RETRIED,
                        target_type="submission", target_id=row["id"], version=row["version"],
                        actor_id=actor_id, trace_id=row["trace_id"],
                        **await submission_flow(conn, tenant_id, row["id"], ANY_CAUSE),
                        payload={"exam_id": row["exam_id"], "reason": reason, "previous_run_id": previous_run_id,
                                 "error": row["error"]})
        await close_by_reference(conn, tenant_id=tenant_id, kind="submission", reference_id=row["id"],
                                 status="replayed", actor=actor_id, reason=reason,
                                 detail={"previous_run_id": previous_run_id})
    return RetryTarget(row["id"], row["exam_id"], row["workflow_id"], row["trace_id"] or "", row["error"])
