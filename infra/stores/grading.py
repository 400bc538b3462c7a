"""SQL of the grading pipeline: load a submission's context, change its status, store results.

Every function takes an open connection from ``PoolManager.transaction(tenant_id)``, so row-level
security applies and the caller decides what commits together.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from agents.rubric import Question
from infra.db.pools import SET_TENANT_SQL
from infra.stores import history

LOAD_SUBMISSION_SQL = """
SELECT id::text AS id, exam_id::text AS exam_id, status, trace_id, total, max_total, error, version
  FROM submissions WHERE id = %s
"""

LOAD_QUESTIONS_SQL = """
SELECT q.question_id, q.type, q.prompt, q.max_points, q.current_version, r.rubric, r.rubric_hash
  FROM questions q
  JOIN rubric_versions r
    ON r.exam_id = q.exam_id AND r.question_id = q.question_id AND r.version = q.current_version
 WHERE q.exam_id = %s
 ORDER BY q.position, q.question_id
"""

LOAD_ANSWERS_SQL = "SELECT question_id, answer FROM answers WHERE submission_id = %s"

SET_STATUS_SQL = """
UPDATE submissions SET status = %(status)s, error = COALESCE(%(error)s, error)
 WHERE id = %(id)s
RETURNING status, version, total, exam_id::text AS exam_id
"""

SET_RESULT_STATUS_SQL = """
UPDATE submissions
   SET status = %(status)s, total = %(total)s, max_total = %(max_total)s, graded_at = now(), error = NULL
 WHERE id = %(id)s
RETURNING status, version, exam_id::text AS exam_id
"""

UPSERT_RESULT_SQL = """
INSERT INTO grading_results (submission_id, question_id, tenant_id, score, max_points, confidence,
                             feedback, grader, criteria_met, criteria_missed, rubric_version, flagged)
VALUES (%(submission_id)s, %(question_id)s, %(tenant_id)s, %(score)s, %(max_points)s, %(confidence)s,
        %(feedback)s, %(grader)s, %(criteria_met)s, %(criteria_missed)s, %(rubric_version)s, %(flagged)s)
ON CONFLICT (submission_id, question_id) DO UPDATE
   SET score = EXCLUDED.score, max_points = EXCLUDED.max_points, confidence = EXCLUDED.confidence,
       feedback = EXCLUDED.feedback, grader = EXCLUDED.grader, criteria_met = EXCLUDED.criteria_met,
       criteria_missed = EXCLUDED.criteria_missed, rubric_version = EXCLUDED.rubric_version,
       flagged = EXCLUDED.flagged, overridden = false, updated_at = now()
"""

UPSERT_KEEP_REVIEWED_SQL = UPSERT_RESULT_SQL.rstrip() + """
 WHERE NOT grading_results.overridden
"""
"""A regrade that keeps reviewers' scores: a row a reviewer overrode is left as it is."""
SELECT_OVERRIDDEN_SQL = "SELECT question_id FROM grading_results WHERE submission_id = %s AND overridden"

OVERRIDE_SCORE_SQL = """
UPDATE grading_results SET score = %(score)s, overridden = true, flagged = false, updated_at = now()
 WHERE submission_id = %(submission_id)s AND question_id = %(question_id)s
RETURNING question_id
"""

OVERRIDE_FEEDBACK_SQL = """
UPDATE grading_results SET feedback = %(feedback)s, overridden = true, flagged = false, updated_at = now()
 WHERE submission_id = %(submission_id)s AND question_id = %(question_id)s
RETURNING question_id
"""

RECOMPUTE_TOTAL_SQL = """
UPDATE submissions
   SET total = (SELECT COALESCE(sum(score), 0) FROM grading_results WHERE submission_id = %(id)s)
 WHERE id = %(id)s
RETURNING total
"""

LOAD_RESULTS_SQL = """
SELECT question_id, score, max_points, confidence, feedback, grader, criteria_met, criteria_missed,
       rubric_version, flagged, overridden
  FROM grading_results WHERE submission_id = %s ORDER BY question_id
"""

INSERT_GRADER_CALL_SQL = """
INSERT INTO grader_calls (tenant_id, submission_id, question_id, run_id, attempt)
VALUES (%s, %s, %s, %s, %s)
"""


Conn = psycopg.AsyncConnection[Any]
"""A connection inside ``PoolManager.transaction(tenant_id)`` (dict rows)."""


class SubmissionNotFoundError(LookupError):
    """The submission does not exist for this tenant."""


@dataclass(frozen=True)
class GradingInputs:
    """What the grading agent needs for one submission."""

    submission: dict[str, Any]
    """The submission row (id, exam_id, status, trace_id, ...)."""
    questions: list[Question]
    """Questions of the exam with their current rubrics, in order."""
    rubric_versions: dict[str, int]
    """question_id -> rubric version graded against."""
    answers: dict[str, Any]
    """question_id -> raw answer."""


@dataclass(frozen=True)
class ExamQuestions:
    """An exam's questions with their current rubrics; shared by cache readers, so never mutated."""

    questions: tuple[Question, ...]
    """Questions with their current rubrics, in exam order."""
    rubric_versions: dict[str, int]
    """question_id -> current rubric version."""
    rubric_hashes: dict[str, str]
    """question_id -> hash of that version, precomputed when it was created."""


async def load_submission(conn: Conn, submission_id: str) -> dict[str, Any]:
    """Return the submission row.

    Raises:
        SubmissionNotFoundError: No such submission visible to the current tenant.

    """
    cur = await conn.execute(LOAD_SUBMISSION_SQL, (submission_id,))
    row = await cur.fetchone()
    if row is None:
        raise SubmissionNotFoundError(f"submission {submission_id} not found")
    return dict(row)


async def load_exam_questions(conn: Conn, exam_id: str) -> ExamQuestions:
    """Load an exam's questions with their current rubric versions and precomputed hashes, in order."""
    cur = await conn.execute(LOAD_QUESTIONS_SQL, (exam_id,))
    questions: list[Question] = []
    versions: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for row in await cur.fetchall():
        questions.append(Question(
            id=row["question_id"], type=row["type"], prompt=row["prompt"],
            max_points=float(row["max_points"]), rubric=row["rubric"],
        ))
        versions[row["question_id"]] = int(row["current_version"])
        hashes[row["question_id"]] = row["rubric_hash"]
    return ExamQuestions(tuple(questions), versions, hashes)


QuestionsLoader = Callable[[Conn, str], Awaitable[ExamQuestions]]
"""``(conn, exam_id) -> ExamQuestions``: :func:`load_exam_questions` or a worker's rubric cache."""


async def load_answers(conn: Conn, submission_id: str) -> dict[str, Any]:
    """Return a submission's answers: question_id -> raw answer."""
    cur = await conn.execute(LOAD_ANSWERS_SQL, (submission_id,))
    return {row["question_id"]: row["answer"] for row in await cur.fetchall()}


async def load_grading_inputs(conn: Conn, submission_id: str, *,
                              questions: QuestionsLoader = load_exam_questions) -> GradingInputs:
    """Load a submission with its exam's questions (current rubric versions) and its answers.

    Args:
        conn: Connection in the tenant's transaction.
        submission_id: Submission to load.
        questions: Where the exam's questions come from (default: PostgreSQL; workers pass
            their :class:`infra.stores.rubrics.RubricCache`). Answers always come from PostgreSQL.

    """
    submission = await load_submission(conn, submission_id)
    exam = await questions(conn, submission["exam_id"])
    answers = await load_answers(conn, submission_id)
    return GradingInputs(submission, list(exam.questions), dict(exam.rubric_versions), answers)


async def set_status(conn: Conn, submission_id: str, status: str, *,
                     error: str | None = None) -> dict[str, Any]:
    """Move a submission to ``status`` (the trigger refuses invalid transitions).

    Returns:
        ``{"status", "version", "total"}`` after the update.

    Raises:
        SubmissionNotFoundError: No such submission.
        psycopg.errors.CheckViolation: The state machine refuses the transition.

    """
    cur = await conn.execute(SET_STATUS_SQL, {"id": submission_id, "status": status, "error": error})
    row = await cur.fetchone()
    if row is None:
        raise SubmissionNotFoundError(f"submission {submission_id} not found")
    return dict(row)


async def save_results(conn: Conn, *, tenant_id: str, submission_id: str,
                       grades: list[dict[str, Any]], status: str, total: float,
                       max_total: float, keep_reviewed: bool = False, trace_id: str | None = None,
                       actor_id: str = "agent") -> dict[str, Any]:
    """Upsert one grading_results row per grade, then set the submission's status and totals.

    With ``keep_reviewed`` (a regrade) rows a reviewer overrode are kept and the total is the sum of
    the stored scores. Every score that changed gets a ``score_history`` row in this transaction:
    source ``agent`` for a question's first grade, ``regrade`` when it replaces an earlier one.

    Returns:
        ``{"status", "version"}`` of the submission after the update.

    Raises:
        SubmissionNotFoundError: No such submission.
        psycopg.errors.CheckViolation: A grade breaks a constraint or the transition is refused.

    """
    before = await history.current_scores(conn, submission_id)
    async with conn.cursor() as cur:  # one pipelined batch, not a round trip per question
        await cur.executemany(UPSERT_KEEP_REVIEWED_SQL if keep_reviewed else UPSERT_RESULT_SQL, [{
            "submission_id": submission_id, "tenant_id": tenant_id,
            "question_id": grade["question_id"], "score": grade["score"],
            "max_points": grade["max_points"], "confidence": grade["confidence"],
            "feedback": grade.get("feedback", ""), "grader": grade["grader"],
            "criteria_met": json.dumps(grade.get("criteria_met", [])),
            "criteria_missed": json.dumps(grade.get("criteria_missed", [])),
            "rubric_version": grade.get("rubric_version", 1), "flagged": bool(grade.get("flagged")),
        } for grade in grades])
    cur = await conn.execute(SET_RESULT_STATUS_SQL, {
        "id": submission_id, "status": status, "total": total, "max_total": max_total,
    })
    row = await cur.fetchone()
    if row is None:
        raise SubmissionNotFoundError(f"submission {submission_id} not found")
    changes = history.changes_between(before, await history.current_scores(conn, submission_id))
    sources: tuple[tuple[history.Source, list[history.ScoreChange]], ...] = (
        ("agent", [c for c in changes if c.old is None]), ("regrade", [c for c in changes if c.old is not None]))
    for source, part in sources:
        await history.record_changes(conn, tenant_id=tenant_id, submission_id=submission_id, changes=part,
                                     source=source, submission_version=int(row["version"]), actor_id=actor_id,
                                     trace_id=trace_id)
    if keep_reviewed:
        kept = await (await conn.execute(RECOMPUTE_TOTAL_SQL, {"id": submission_id})).fetchone()
        return {**row, "total": kept["total"] if kept else total}
    return dict(row)


async def reviewed_questions(conn: Conn, submission_id: str) -> set[str]:
    """Questions of a submission whose score a reviewer set (``overridden``)."""
    rows = await (await conn.execute(SELECT_OVERRIDDEN_SQL, (submission_id,))).fetchall()
    return {r["question_id"] for r in rows}


async def apply_overrides(conn: Conn, submission_id: str, overrides: dict[str, float],
                          feedback: dict[str, str] | None = None) -> float | None:
    """Replace scores and feedback of the given questions (marked overridden) and recompute the total.

    Args:
        conn: connection inside the caller's transaction.
        submission_id: submission whose results change.
        overrides: question_id -> new score.
        feedback: question_id -> new feedback text; a question may appear here only (its score is kept).

    Returns:
        The new submission total.

    Raises:
        KeyError: An override names a question with no result.
        psycopg.errors.CheckViolation: A score is outside ``[0, max_points]``.

    """
    for question_id, score in overrides.items():
        cur = await conn.execute(OVERRIDE_SCORE_SQL, {
            "submission_id": submission_id, "question_id": question_id, "score": score,
        })
        if await cur.fetchone() is None:
            raise KeyError(f"no grading result for question {question_id!r}")
    for question_id, text in (feedback or {}).items():
        cur = await conn.execute(OVERRIDE_FEEDBACK_SQL, {
            "submission_id": submission_id, "question_id": question_id, "feedback": text,
        })
        if await cur.fetchone() is None:
            raise KeyError(f"no grading result for question {question_id!r}")
    cur = await conn.execute(RECOMPUTE_TOTAL_SQL, {"id": submission_id})
    row = await cur.fetchone()
    return float(row["total"]) if row and row["total"] is not None else None


async def load_results(conn: Conn, submission_id: str) -> list[dict[str, Any]]:
    """Return the submission's grading_results rows (JSON-friendly)."""
    cur = await conn.execute(LOAD_RESULTS_SQL, (submission_id,))
    return [_jsonable(dict(row)) for row in await cur.fetchall()]


async def record_grader_call(conn: Conn, *, tenant_id: str, submission_id: str,
                             question_id: str, run_id: str, attempt: int) -> None:
    """Insert one grader_calls row (one per question graded)."""
    await conn.execute(INSERT_GRADER_CALL_SQL, (tenant_id, submission_id, question_id, run_id, attempt))


async def record_grader_calls_in(conn: Conn, *, tenant_id: str, submission_id: str, question_ids: list[str],
                                 run_id: str, attempt: int) -> None:
    """Insert grader_calls rows as ``tenant_id`` inside the caller's open transaction.

    The caller's connection is not one of :meth:`PoolManager.transaction`'s (the checkpoint
    writes' own, see ``GradeflowSaver.for_run``), so the tenant is set here, for this transaction.
    """
    if not question_ids:
        return
    await conn.execute(SET_TENANT_SQL, (tenant_id,))
    async with conn.cursor() as cur:
        await cur.executemany(INSERT_GRADER_CALL_SQL,
                              [(tenant_id, submission_id, qid, run_id, attempt) for qid in question_ids])


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if hasattr(value, "as_tuple"):  # Decimal
            value = float(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out
