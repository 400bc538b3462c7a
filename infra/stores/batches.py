"""Batches: many submissions of one exam graded together (``POST /v1/exams/{id}/batches``).

:func:`create_batch` stores the batch, its new submissions (through the single-submission intake,
:func:`infra.stores.submissions.intake`, chunk by chunk in one transaction) or its existing ones, and
the ``batch_items`` in one transaction. :func:`batch_counts` is the database view of its progress
(the API asks the batch workflow first).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.constants import SubmissionStatus
from infra.db.pools import PoolManager
from infra.stores.exams import ensure_tenant, parse_uuid
from infra.stores.submissions import AnswerErrors, ExamNotFoundError, exam_questions, exam_title, intake

BATCH_CHUNK = 100
"""Submissions validated and written per chunk of the intake transaction."""
MAX_BATCH_SUBMISSIONS = 500
"""Most submissions (new or existing) one batch may hold."""
DONE_STATUSES = frozenset({SubmissionStatus.COMPLETED.value, SubmissionStatus.NEEDS_REVIEW.value,
                           SubmissionStatus.FAILED.value, SubmissionStatus.NEEDS_INTERVENTION.value})
"""Statuses counted as graded (or given up) in a batch's database percentage."""

INSERT_BATCH_SQL = """
INSERT INTO batches (id, tenant_id, exam_id, workflow_id, max_concurrent, total, trace_id, created_by, kind,
                     override_reviewed)
VALUES (%(id)s, %(tenant_id)s, %(exam_id)s, %(workflow_id)s, %(max_concurrent)s, %(total)s, %(trace_id)s,
        %(created_by)s, %(kind)s, %(override_reviewed)s)"""
INSERT_ITEM_SQL = """
INSERT INTO batch_items (batch_id, position, submission_id, tenant_id)
VALUES (%(batch_id)s, %(position)s, %(submission_id)s, %(tenant_id)s)"""
SELECT_EXISTING_SQL = "SELECT id, trace_id, student_id FROM submissions WHERE exam_id = %s AND id = ANY(%s)"
SELECT_BATCH_SQL = """
SELECT b.id, b.exam_id, b.workflow_id, b.max_concurrent, b.total, b.trace_id, b.created_by, b.created_at, b.kind,
       b.override_reviewed, b.started_at, e.title AS exam_title
  FROM batches b JOIN exams e ON e.id = b.exam_id WHERE b.id = %s"""
MARK_STARTED_SQL = "UPDATE batches SET started_at = now() WHERE id = %s AND started_at IS NULL"
UNSTARTED_SQL = "SELECT tenant_id, id::text AS id FROM unstarted_batches(%s, %s)"
"""Batches of every tenant whose workflow start was never recorded (SECURITY DEFINER, migration 0019)."""
REGRADABLE = ("completed", "failed")
"""Statuses a regrade takes: a finished grading (a running or waiting one is left alone)."""
REGRADE_SCOPE_SQL = {
    "all": "SELECT s.id::text AS id FROM submissions s WHERE s.exam_id = %(exam)s AND s.status = ANY(%(statuses)s)",
    "flagged": """SELECT s.id::text AS id FROM submissions s WHERE s.exam_id = %(exam)s AND s.status = ANY(%(statuses)s)
   AND EXISTS (SELECT 1 FROM grading_results r WHERE r.submission_id = s.id AND (r.flagged OR r.overridden))""",
    "before_version": """SELECT s.id::text AS id FROM submissions s
 WHERE s.exam_id = %(exam)s AND s.status = ANY(%(statuses)s)
   AND EXISTS (SELECT 1 FROM grading_results r WHERE r.submission_id = s.id AND r.rubric_version < %(version)s)""",
    "ids": """SELECT s.id::text AS id FROM submissions s
 WHERE s.exam_id = %(exam)s AND s.status = ANY(%(statuses)s) AND s.id = ANY(%(ids)s)""",
}
"""Submissions a regrade scope selects (ordered by the caller's query suffix)."""
REGRADE_ORDER = " ORDER BY s.created_at, s.id"
SELECT_ITEMS_SQL = """
SELECT i.submission_id::text AS submission_id, s.trace_id, s.student_id
  FROM batch_items i JOIN submissions s ON s.id = i.submission_id
 WHERE i.batch_id = %s ORDER BY i.position"""
COUNT_ITEMS_SQL = """
SELECT s.status, count(*) AS n
  FROM batch_items i JOIN submissions s ON s.id = i.submission_id
 WHERE i.batch_id = %s GROUP BY s.status"""


def batch_workflow_id(batch_id: str) -> str:
    """Workflow id of a batch: ``batch-<batch_id>``."""
    return f"batch-{batch_id}"


@dataclass(frozen=True)
class BatchItem:
    """One submission of a batch, with what starting its grading needs."""

    submission_id: str
    trace_id: str
    created: bool = False
    """A new submission stored by this batch (``False``: existing, or a repeated ``external_id``)."""
    student_id: str = ""
    """The submission's student (search attribute and summary of its grading)."""


@dataclass(frozen=True)
class CreatedBatch:
    """What the batch transaction committed."""

    batch_id: str
    workflow_id: str
    exam_id: str
    trace_id: str
    max_concurrent: int
    items: list[BatchItem]
    exam_title: str = ""
    """The exam's title (its gradings' static summary names it)."""


class UnknownSubmissionsError(LookupError):
    """Existing submission ids that are not this exam's (or not this tenant's)."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(", ".join(ids))
        self.ids = ids


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def create_batch(pools: PoolManager, tenant_id: str, *, exam_id: str, trace_id: str, max_concurrent: int,
                       new_submissions: Sequence[dict[str, Any]] = (), submission_ids: Sequence[str] = (),
                       created_by: str | None = None, chunk_size: int = BATCH_CHUNK, kind: str = "grade",
                       override_reviewed: bool = False) -> CreatedBatch:
    """Store a batch of new submissions (``{student_id, answers, external_id?}``) or existing ids.

    Everything is one transaction: a bad answer anywhere stores nothing. A repeated
    ``external_id`` reuses the earlier submission (so a retried request duplicates nothing).

    Raises:
        ExamNotFoundError: unknown exam (or another tenant's).
        AnswerErrors: answers that do not fit (fields ``submissions[i].answers.<qid>``).
        UnknownSubmissionsError: ids that are not submissions of this exam for this tenant.

    """
    eid = parse_uuid(exam_id)
    if eid is None:
        raise ExamNotFoundError(exam_id)
    batch_id = str(uuid.uuid4())
    items: list[BatchItem] = []
    async with pools.transaction(tenant_id) as conn:
        title = await exam_title(conn, eid)
        questions = await exam_questions(conn, eid, checked=True)
        await ensure_tenant(conn, tenant_id)
        problems: list[dict[str, str]] = []
        for start, chunk in zip(range(0, len(new_submissions), chunk_size),
                                _chunks(new_submissions, chunk_size), strict=True):
            for offset, sub in enumerate(chunk):
                try:
                    created = await intake(
                        conn, tenant_id, exam_id=eid, questions=questions, student_id=sub["student_id"],
                        answers=dict(sub["answers"]), trace_id=trace_id, external_id=sub.get("external_id"),
                        submitted_by=created_by, field_prefix=f"submissions[{start + offset}].answers",
                        event_extra={"batch_id": batch_id})
                except AnswerErrors as exc:
                    problems.extend(exc.errors)
                    continue
                items.append(BatchItem(created.submission_id, created.trace_id, created.created,
                                       student_id=str(sub["student_id"])))
        if problems:
            raise AnswerErrors(problems)
        wanted = [parse_uuid(s) for s in submission_ids]
        if None in wanted:
            raise UnknownSubmissionsError([s for s, u in zip(submission_ids, wanted, strict=True) if u is None])
        if wanted:
            rows = await (await conn.execute(SELECT_EXISTING_SQL, (eid, wanted))).fetchall()
            found = {str(r["id"]): r["trace_id"] for r in rows}
            students = {str(r["id"]): str(r["student_id"]) for r in rows}
            missing = [str(u) for u in wanted if str(u) not in found]
            if missing:
                raise UnknownSubmissionsError(missing)
            items.extend(BatchItem(str(u), found[str(u)], student_id=students[str(u)]) for u in wanted)
        unique = list({item.submission_id: item for item in items}.values())  # a submission once per batch
        workflow_id = batch_workflow_id(batch_id)
        await conn.execute(INSERT_BATCH_SQL, {
            "id": batch_id, "tenant_id": tenant_id, "exam_id": eid, "workflow_id": workflow_id,
            "max_concurrent": max_concurrent, "total": len(unique), "trace_id": trace_id,
            "created_by": created_by, "kind": kind, "override_reviewed": override_reviewed})
        for chunk_start, chunk in zip(range(0, len(unique), chunk_size), _chunks(unique, chunk_size),
                                      strict=True):
            async with conn.cursor() as cur:
                await cur.executemany(INSERT_ITEM_SQL, [
                    {"batch_id": batch_id, "position": chunk_start + i, "submission_id": item.submission_id,
                     "tenant_id": tenant_id} for i, item in enumerate(chunk)])
    return CreatedBatch(batch_id, workflow_id, str(eid), trace_id, max_concurrent, unique, exam_title=title)


async def load_batch(pools: PoolManager, tenant_id: str, batch_id: str) -> dict[str, Any] | None:
    """A batch with its submission items in order (``None`` when unknown for this tenant)."""
    bid = parse_uuid(batch_id)
    if bid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(SELECT_BATCH_SQL, (bid,))).fetchone()
        if row is None:
            return None
        items = await (await conn.execute(SELECT_ITEMS_SQL, (bid,))).fetchall()
    return {**row, "id": str(row["id"]), "exam_id": str(row["exam_id"]), "items": list(items)}


async def batch_counts(pools: PoolManager, tenant_id: str, batch_id: str) -> dict[str, int]:
    """The batch's submissions per status, from PostgreSQL."""
    bid = parse_uuid(batch_id)
    if bid is None:
        return {}
    async with pools.transaction(tenant_id) as conn:
        rows = await (await conn.execute(COUNT_ITEMS_SQL, (bid,))).fetchall()
    return {r["status"]: r["n"] for r in rows}


async def regrade_candidates(pools: PoolManager, tenant_id: str, *, exam_id: str, scope: str,
                             rubric_version: int | None = None, submission_ids: Sequence[str] = ()) -> list[str]:
    """Ids of the exam's finished submissions a regrade scope selects, oldest first.

    Scopes: ``all``; ``flagged`` (a result was flagged for review, or a reviewer set a score);
    ``before_version`` (a result graded with a rubric version below ``rubric_version``); ``ids``.

    Raises:
        ExamNotFoundError: unknown exam (or another tenant's).
        UnknownSubmissionsError: with scope ``ids``, ids that are not finished submissions of the exam.

    """
    eid = parse_uuid(exam_id)
    if eid is None:
        raise ExamNotFoundError(exam_id)
    wanted = [parse_uuid(i) for i in submission_ids]
    if None in wanted:
        raise UnknownSubmissionsError([s for s, u in zip(submission_ids, wanted, strict=True) if u is None])
    async with pools.transaction(tenant_id) as conn:
        await exam_questions(conn, eid)  # 404 for an unknown exam
        rows = await (await conn.execute(REGRADE_SCOPE_SQL[scope] + REGRADE_ORDER, {
            "exam": eid, "statuses": list(REGRADABLE), "version": rubric_version, "ids": wanted})).fetchall()
    found = [r["id"] for r in rows]
    if scope == "ids":
        missing = [str(u) for u in wanted if str(u) not in set(found)]
        if missing:
            raise UnknownSubmissionsError(missing)
        return [str(u) for u in dict.fromkeys(wanted)]
    return found


async def mark_started(pools: PoolManager, tenant_id: str, batch_id: str) -> None:
    """Record that Temporal accepted the start of the batch's workflow (the reconciler leaves it alone)."""
    bid = parse_uuid(batch_id)
    if bid is None:
        return
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(MARK_STARTED_SQL, (bid,))


async def unstarted(pools: PoolManager, *, older_than_seconds: float, limit: int) -> list[dict[str, Any]]:
    """Batches of every tenant created more than ``older_than_seconds`` ago whose start was never recorded.

    Read through the SECURITY DEFINER function ``unstarted_batches`` (the reconciler has no tenant
    context): tenant and id only; :func:`load_batch` reads the rest under the tenant.
    """
    async with pools.connection() as conn:
        cur = await conn.execute(UNSTARTED_SQL, (older_than_seconds, limit))
        return list(await cur.fetchall())
