"""Gradebook export: an exam's submissions, one row each, read through a server-side cursor.

:func:`gradebook` runs in ONE tenant transaction (row-level security applies to every row it reads):
it first yields the exam's question ids in exam order (:class:`GradebookHeader`; a missing exam, or
another tenant's, raises :class:`infra.stores.submissions.ExamNotFoundError` instead), then batches
of :class:`GradebookRow` fetched from a named (server-side) cursor, ``batch_rows`` at a time, so memory
stays bounded whatever the exam's size. Scores come back per question in the header's order
(``None``: no result for that question); numbers and times come as text, exactly as stored.

The connection is held until the consumer finishes or closes the generator (``aclose``; the API's
streaming response does so when the client goes away): an export of 100k submissions holds one
pooled connection for the few seconds it takes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from psycopg.rows import class_row

from infra.db.pools import PoolManager
from infra.stores.exams import parse_uuid
from infra.stores.submissions import ExamNotFoundError

EXAM_QUESTIONS_SQL = """
SELECT e.id, q.question_id
  FROM exams e LEFT JOIN questions q ON q.exam_id = e.id
 WHERE e.id = %s
 ORDER BY q.position, q.question_id"""
"""The exam (one row with ``question_id`` NULL when it has no question), questions in exam order."""

_GRADEBOOK_SQL = """
SELECT s.id::text AS submission_id, s.student_id, s.external_id, s.status,
       COALESCE(g.scores, '{{}}'::text[]) AS scores, s.total::text AS total, s.max_total::text AS max_total,
       to_json(s.graded_at) #>> '{{}}' AS graded_at{feedback_column}
  FROM submissions s
  LEFT JOIN LATERAL (
       SELECT array_agg(r.score::text ORDER BY q.n) AS scores{feedback_agg}
         FROM unnest(%(questions)s::text[]) WITH ORDINALITY AS q(question_id, n)
         LEFT JOIN grading_results r ON r.submission_id = s.id AND r.question_id = q.question_id) g ON true
 WHERE s.tenant_id = %(tenant_id)s AND s.exam_id = %(exam_id)s
 ORDER BY s.created_at, s.id"""
GRADEBOOK_SQL = _GRADEBOOK_SQL.format(feedback_column="", feedback_agg="")
"""One row per submission of the exam, oldest first; ``scores`` in the order of ``questions``.

Numbers come back as PostgreSQL's text of the ``numeric`` (exactly the stored value, never an
exponent) and times as JSON's ISO 8601 text of the ``timestamptz``: the export writes them as they
are, with no parsing into Python objects and formatting back (most of an export's CPU otherwise)."""
GRADEBOOK_FEEDBACK_SQL = _GRADEBOOK_SQL.format(
    feedback_column=", COALESCE(g.feedback, '{}'::text[]) AS feedback",
    feedback_agg=", array_agg(r.feedback ORDER BY q.n) AS feedback")
""":data:`GRADEBOOK_SQL` plus each question's feedback (``None`` where no result)."""

CURSOR_NAME = "gradebook_export"
"""Name of the server-side cursor (one per transaction, so a fixed name is enough)."""
BATCH_ROWS = 1000
"""Rows fetched from the server per round trip (and handed to the consumer at once)."""


@dataclass(frozen=True, slots=True)
class GradebookHeader:
    """What comes first: the exam's question ids, in exam order (the score columns)."""

    questions: list[str]
    """Question ids; each row's ``scores`` (and ``feedback``) follow this order."""


@dataclass(frozen=True, slots=True)
class GradebookRow:
    """One submission's line of the gradebook."""

    submission_id: str
    """Submission id (canonical UUID)."""
    student_id: str
    """Student id as submitted."""
    external_id: str | None
    """The LMS's id of the submission, if it gave one."""
    status: str
    """Submission status (``completed``, ``needs_review``, ...)."""
    scores: list[str | None]
    """Score per question (header order) as a decimal numeral; ``None``: not graded."""
    total: str | None
    """Sum of the scores (decimal numeral), once graded."""
    max_total: str | None
    """Full marks of the exam (decimal numeral)."""
    graded_at: str | None
    """When the grading (or the latest regrade) was stored: ISO 8601 with the UTC offset."""
    feedback: list[str | None] | None = None
    """Feedback per question (header order), when asked for; ``None`` otherwise."""


async def gradebook(pools: PoolManager, tenant_id: str, exam_id: str, *, feedback: bool = False,
                    batch_rows: int = BATCH_ROWS) -> AsyncGenerator[GradebookHeader | list[GradebookRow], None]:
    """Yield the exam's :class:`GradebookHeader`, then its rows in batches, all in one tenant transaction.

    Args:
        pools: the process's pool manager.
        tenant_id: the caller's tenant (row-level security).
        exam_id: the exam.
        feedback: also read each question's feedback.
        batch_rows: rows per batch (one ``FETCH`` each).

    Raises:
        ExamNotFoundError: no such exam for this tenant (raised by the first ``__anext__``).

    """
    eid = parse_uuid(exam_id)
    if eid is None:
        raise ExamNotFoundError(exam_id)
    async with pools.transaction(tenant_id) as conn:
        found = await (await conn.execute(EXAM_QUESTIONS_SQL, (eid,))).fetchall()
        if not found:
            raise ExamNotFoundError(exam_id)
        questions = [r["question_id"] for r in found if r["question_id"] is not None]
        yield GradebookHeader(questions)
        async with conn.cursor(CURSOR_NAME, row_factory=class_row(GradebookRow)) as cur:
            await cur.execute(GRADEBOOK_FEEDBACK_SQL if feedback else GRADEBOOK_SQL,
                              {"questions": questions, "tenant_id": tenant_id, "exam_id": eid})
            while batch := await cur.fetchmany(batch_rows):
                yield batch
