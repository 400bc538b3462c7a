"""Submissions and their answers: the intake transaction and the read model served by the API.

Intake (:func:`create_submission`) writes the submission, its answers and the outbox event
``submission.received`` in one transaction, after validating every answer against the exam's
current questions. Reads (:func:`read_submission`) go Redis first and back-fill from PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb
from redis.exceptions import RedisError

from agents.rubric import validate_answer
from infra.cache.copies import Cache
from infra.cache.keys import submission_key
from infra.constants import EventType, SubmissionStatus, grading_workflow_id
from infra.db.pools import PoolManager
from infra.events.outbox import EventEnvelope, add_event
from infra.stores.exams import ensure_tenant, load_questions, parse_uuid

EXAM_EXISTS_SQL = "SELECT id FROM exams WHERE id = %s"
EXAM_TITLE_SQL = "SELECT title FROM exams WHERE id = %s"
INSERT_SUBMISSION_SQL = """
INSERT INTO submissions (id, tenant_id, exam_id, student_id, external_id, status, max_total,
                         workflow_id, trace_id, submitted_by)
VALUES (%(id)s, %(tenant_id)s, %(exam_id)s, %(student_id)s, %(external_id)s, %(status)s, %(max_total)s,
        %(workflow_id)s, %(trace_id)s, %(submitted_by)s)
ON CONFLICT (tenant_id, exam_id, student_id, external_id) WHERE external_id IS NOT NULL DO NOTHING
RETURNING id"""
SELECT_BY_EXTERNAL_SQL = """
SELECT id, workflow_id, trace_id, status FROM submissions
 WHERE exam_id = %s AND student_id = %s AND external_id = %s"""
INSERT_ANSWER_SQL = """
INSERT INTO answers (submission_id, question_id, tenant_id, answer)
VALUES (%(submission_id)s, %(question_id)s, %(tenant_id)s, %(answer)s)"""
SELECT_SUBMISSION_SQL = """
SELECT id, exam_id, student_id, external_id, status, total, max_total, workflow_id, trace_id, error,
       version, created_at, updated_at, graded_at, submitted_by
  FROM submissions WHERE id = %s"""
SELECT_RESULTS_SQL = """
SELECT question_id, score, max_points, confidence, feedback, grader, criteria_met, criteria_missed,
       rubric_version, flagged, overridden
  FROM grading_results WHERE submission_id = %s ORDER BY question_id"""
SELECT_STATUS_SQL = "SELECT status, workflow_id, submitted_by FROM submissions WHERE id = %s"
COUNT_BY_STATUS_SQL = "SELECT status, count(*) AS n FROM submissions WHERE exam_id = %s GROUP BY status"
STRANDED_SQL = "SELECT tenant_id, id::text AS id, exam_id::text AS exam_id, trace_id FROM stranded_submissions(%s, %s)"


VIEW_KEYS = frozenset({"id", "exam_id", "student_id", "status", "workflow_id", "trace_id", "created_at",
                       "updated_at", "results", "submitted_by"})
"""Keys every read-model copy must have (see :func:`submission_view`); ``submitted_by`` decides who may read it."""


class ExamNotFoundError(LookupError):
    """The submission names an exam that does not exist for this tenant."""


@dataclass
class AnswerErrors(ValueError):
    """Answers that do not fit the exam; each entry is ``{field, message}``."""

    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)


@dataclass(frozen=True)
class CreatedSubmission:
    """What the intake transaction committed."""

    submission_id: str
    """New (or, for a repeated ``external_id``, existing) submission id."""
    workflow_id: str
    """``grade-<submission_id>``."""
    trace_id: str
    """Trace id carried to the workflow."""
    status: str
    """Status at reply time (``queued`` for a new submission)."""
    created: bool
    """``False`` when ``external_id`` matched an earlier submission (nothing new stored)."""
    exam_title: str = ""
    """The exam's title (the grading workflow's static summary names it); empty when not read."""


def _num(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


async def create_submission(pools: PoolManager, tenant_id: str, *, exam_id: str, student_id: str,
                            answers: dict[str, Any], trace_id: str, external_id: str | None = None,
                            submitted_by: str | None = None) -> CreatedSubmission:
    """Validate and store a submission, its answers and ``submission.received`` in one transaction.

    ``submitted_by`` is the caller (the token's ``sub``): a submitter reads only its own submissions.

    Raises:
        ExamNotFoundError: unknown exam (or another tenant's).
        AnswerErrors: answers to unknown questions or of the wrong type; nothing is stored.

    """
    eid = parse_uuid(exam_id)
    if eid is None:
        raise ExamNotFoundError(exam_id)
    async with pools.transaction(tenant_id) as conn:
        title = await exam_title(conn, eid)
        questions = await exam_questions(conn, eid, checked=True)
        await ensure_tenant(conn, tenant_id)
        created = await intake(conn, tenant_id, exam_id=eid, questions=questions, student_id=student_id,
                               answers=answers, trace_id=trace_id, external_id=external_id,
                               submitted_by=submitted_by)
    return replace(created, exam_title=title)


async def exam_title(conn: Any, exam_id: uuid.UUID) -> str:
    """The exam's title, read in the intake transaction.

    Raises:
        ExamNotFoundError: unknown exam (or another tenant's).

    """
    row = await (await conn.execute(EXAM_TITLE_SQL, (exam_id,))).fetchone()
    if row is None:
        raise ExamNotFoundError(str(exam_id))
    return str(row["title"])


async def exam_questions(conn: Any, exam_id: uuid.UUID, *, checked: bool = False) -> dict[str, Any]:
    """The exam's current questions by id, read in the intake transaction.

    ``checked``: the caller already knows the exam exists (e.g. it read its title): no second look-up.

    Raises:
        ExamNotFoundError: unknown exam (or another tenant's).

    """
    if not checked and await (await conn.execute(EXAM_EXISTS_SQL, (exam_id,))).fetchone() is None:
        raise ExamNotFoundError(str(exam_id))
    return {s.question.id: s.question for s in await load_questions(conn, exam_id)}


def validate_answers(questions: dict[str, Any], answers: dict[str, Any],
                     field_prefix: str = "answers") -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Normalise answers against the exam's questions: ``(normalised, problems)``."""
    normalised, problems = {}, []
    for qid, raw in answers.items():
        if qid not in questions:
            problems.append({"field": f"{field_prefix}.{qid}", "message": "unknown question for this exam"})
            continue
        try:
            normalised[qid] = validate_answer(questions[qid], raw)
        except ValueError as exc:
            problems.append({"field": f"{field_prefix}.{qid}", "message": str(exc)})
    return normalised, problems


async def intake(conn: Any, tenant_id: str, *, exam_id: uuid.UUID, questions: dict[str, Any], student_id: str,
                 answers: dict[str, Any], trace_id: str, external_id: str | None = None,
                 submitted_by: str | None = None, field_prefix: str = "answers",
                 event_extra: dict[str, Any] | None = None) -> CreatedSubmission:
    """Store one submission, its answers and ``submission.received`` in the caller's transaction.

    The tenant row must exist (:func:`infra.stores.exams.ensure_tenant`). ``event_extra`` adds keys
    to the event's payload (a batch's id: the batch starts the grading, not the relay).

    Raises:
        AnswerErrors: answers to unknown questions or of the wrong type (fields named ``field_prefix.<qid>``).

    """
    exam = str(exam_id)  # one spelling in the event
    normalised, problems = validate_answers(questions, answers, field_prefix)
    if problems:
        raise AnswerErrors(problems)
    sid = uuid.uuid4()
    workflow_id = grading_workflow_id(str(sid))
    cur = await conn.execute(INSERT_SUBMISSION_SQL, {
        "id": sid, "tenant_id": tenant_id, "exam_id": exam_id, "student_id": student_id,
        "external_id": external_id, "status": SubmissionStatus.QUEUED.value,
        "max_total": sum(q.max_points for q in questions.values()), "workflow_id": workflow_id,
        "trace_id": trace_id, "submitted_by": submitted_by})
    if await cur.fetchone() is None:
        cur = await conn.execute(SELECT_BY_EXTERNAL_SQL, (exam_id, student_id, external_id))
        old = await cur.fetchone()
        if old is None:  # the INSERT conflicted, so the submission with this external id exists
            raise RuntimeError(f"submission {external_id!r} conflicted on insert but was not found")
        return CreatedSubmission(str(old["id"]), old["workflow_id"], old["trace_id"], old["status"], False)
    async with conn.cursor() as cur:
        await cur.executemany(INSERT_ANSWER_SQL, [
            {"submission_id": sid, "question_id": qid, "tenant_id": tenant_id, "answer": Jsonb(a)}
            for qid, a in normalised.items()])
    await add_event(conn, tenant_id=tenant_id, event_type=EventType.SUBMISSION_RECEIVED.value,
                    target_type="submission", target_id=str(sid),
                    payload={"submission_id": str(sid), "exam_id": exam, "student_id": student_id,
                             "trace_id": trace_id, **(event_extra or {})},
                    trace_id=trace_id, correlation_id=str(sid))
    return CreatedSubmission(str(sid), workflow_id, trace_id, SubmissionStatus.QUEUED.value, True)


def public_error(status: str, error: str | None) -> str | None:
    """The error text API clients see: for ``needs_intervention`` only the kind of failure.

    The full text (which may quote internal details, SQL parameters included) stays in the database
    for operators (``gradeflow dlq``, the admin routes); clients learn that an operator is needed and why
    in one word.
    """
    if status != SubmissionStatus.NEEDS_INTERVENTION or not error:
        return error
    kind = error.split(":", 1)[0].strip()
    if not kind.isidentifier():
        kind = "InternalError"
    return f"grading stopped ({kind}); an operator has been notified and can retry it"


def submission_view(row: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the JSON read model of a submission (the API reply and the Redis hot copy)."""
    return {
        "id": str(row["id"]), "exam_id": str(row["exam_id"]), "student_id": row["student_id"],
        "external_id": row["external_id"], "status": row["status"], "total": _num(row["total"]),
        "max_total": _num(row["max_total"]), "workflow_id": row["workflow_id"], "trace_id": row["trace_id"],
        "error": public_error(row["status"], row["error"]), "version": row["version"],
        "submitted_by": row.get("submitted_by"),
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "graded_at": row["graded_at"].isoformat() if row["graded_at"] else None,
        "results": [
            {"question_id": r["question_id"], "score": _num(r["score"]), "max_points": _num(r["max_points"]),
             "confidence": r["confidence"], "feedback": r["feedback"], "grader": r["grader"],
             "criteria_met": r["criteria_met"], "criteria_missed": r["criteria_missed"],
             "rubric_version": r["rubric_version"], "flagged": r["flagged"], "overridden": r["overridden"]}
            for r in results
        ],
    }


async def load_submission(pools: PoolManager, tenant_id: str, submission_id: str) -> dict[str, Any] | None:
    """Read a submission with its results from PostgreSQL (``None`` when unknown)."""
    sid = parse_uuid(submission_id)
    if sid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(SELECT_SUBMISSION_SQL, (sid,))).fetchone()
        if row is None:
            return None
        results = await (await conn.execute(SELECT_RESULTS_SQL, (sid,))).fetchall()
    return submission_view(row, results)


async def read_submission(pools: PoolManager, cache: Cache, tenant_id: str,
                          submission_id: str) -> tuple[dict[str, Any] | None, str]:
    """Read a submission Redis first, PostgreSQL on a miss (back-filled); returns (view, cache source).

    A hot copy lacking fields of the read model (a partial copy written by another writer) is
    treated as a miss: PostgreSQL answers and the full view replaces it.
    """
    sid = parse_uuid(submission_id)
    if sid is None:
        return None, "database"
    submission_id = str(sid)  # one spelling, one hot copy
    key = submission_key(tenant_id, submission_id)
    view, source = await cache.read_through(key, lambda: load_submission(pools, tenant_id, submission_id))
    if source == "cache" and isinstance(view, dict) and not VIEW_KEYS <= view.keys():
        view = await load_submission(pools, tenant_id, submission_id)
        source = "database"
        if view is not None:
            try:
                await cache.set_json(key, view)
            except (RedisError, OSError):
                source = "database-degraded"
    return view, source


async def load_status(pools: PoolManager, tenant_id: str, submission_id: str) -> dict[str, Any] | None:
    """Return ``{status, workflow_id, submitted_by}`` of a submission from PostgreSQL (``None`` when unknown)."""
    sid = parse_uuid(submission_id)
    if sid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        return await (await conn.execute(SELECT_STATUS_SQL, (sid,))).fetchone()


async def count_by_status(pools: PoolManager, tenant_id: str, exam_id: str) -> dict[str, int]:
    """Count an exam's submissions per status (the exam live feed's snapshot)."""
    eid = parse_uuid(exam_id)
    if eid is None:
        return {}
    async with pools.transaction(tenant_id) as conn:
        rows = await (await conn.execute(COUNT_BY_STATUS_SQL, (eid,))).fetchall()
    return {r["status"]: r["n"] for r in rows}


async def refresh_copy(pools: PoolManager, cache: Cache, tenant_id: str, submission_id: str) -> bool:
    """Replace the hot copy with the committed read model, unless Redis holds a newer copy.

    Call it after the commit; the database is the truth, so Redis errors propagate to the caller,
    which logs them: the outbox relay repairs the copy later (:func:`copy_repair_handler`).
    Returns whether a copy was written.
    """
    key = submission_key(tenant_id, submission_id)
    view = await load_submission(pools, tenant_id, submission_id)
    if view is None:
        await cache.delete(key)
        return False
    return await cache.set_if_newer(key, view)


def copy_repair_handler(cache: Cache) -> Callable[[EventEnvelope], Awaitable[None]]:
    """Outbox relay handler: drop a submission's hot copy older than the event's committed version.

    Every committed change of a submission emits an outbox event carrying the row version. The
    writer refreshes the copy right after its commit; when that failed (Redis down), this handler,
    run by the relay once Redis answers again, removes the stale copy (the next read back-fills
    from PostgreSQL). A Redis error here fails the publish, so the relay retries it: a copy is never
    left stale for its TTL.
    """
    async def repair(event: EventEnvelope) -> None:
        if event.target_type == "submission":
            await cache.drop_if_older(submission_key(event.tenant_id, event.target_id), event.version)

    return repair


async def stranded(pools: PoolManager, *, older_than_seconds: float, limit: int) -> list[dict[str, Any]]:
    """Submissions of every tenant still ``queued`` after ``older_than_seconds`` (oldest first).

    Read through the SECURITY DEFINER function ``stranded_submissions`` (the reconciler has no
    tenant context): ``{tenant_id, id, exam_id, trace_id}`` only.
    """
    async with pools.connection() as conn:
        cur = await conn.execute(STRANDED_SQL, (older_than_seconds, limit))
        return list(await cur.fetchall())
