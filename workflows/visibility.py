"""What operators see of a grading in the Temporal Web UI: search attributes and the static summary.

Every ``grade-<submission_id>`` workflow, started by the API, the reconciler, an operator's retry or a
batch, carries the Keyword search attributes ``TenantId``, ``TraceId``, ``SubmissionId``,
``GradeflowExam``, ``GradeflowStudent`` (when known at start) and ``GradeflowStatus`` (``queued`` at
start, then upserted by the workflow as the submission's status changes), so the workflow list can show
and filter them, e.g. ``GradeflowExam="<exam id>" AND GradeflowStatus="needs_review"``. Its static
summary names the exam title and the student. Pure functions of the workflow input: the batch
workflow (deterministic code) builds its children's with them too.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from infra.constants import (
    SEARCH_ATTR_EXAM,
    SEARCH_ATTR_STATUS,
    SEARCH_ATTR_STUDENT,
    SEARCH_ATTR_SUBMISSION,
    SEARCH_ATTR_TENANT,
    SEARCH_ATTR_TRACE,
)
from workflows.types import GradingInput

TENANT_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_TENANT)
TRACE_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_TRACE)
SUBMISSION_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_SUBMISSION)
EXAM_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_EXAM)
STUDENT_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_STUDENT)
STATUS_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_STATUS)
SUMMARY_MAX = 200
"""Longest static summary (Temporal shows it as one line in the workflow list)."""


def grading_search_attributes(inp: GradingInput, *, status: str = "queued") -> TypedSearchAttributes:
    """The search attributes a grading starts with (``GradeflowStudent`` only when the student is known)."""
    pairs = [SearchAttributePair(TENANT_KEY, inp.tenant_id), SearchAttributePair(TRACE_KEY, inp.trace_id),
             SearchAttributePair(SUBMISSION_KEY, inp.submission_id), SearchAttributePair(EXAM_KEY, inp.exam_id),
             SearchAttributePair(STATUS_KEY, status)]
    if inp.student_id:
        pairs.append(SearchAttributePair(STUDENT_KEY, inp.student_id))
    return TypedSearchAttributes(pairs)


def grading_summary(inp: GradingInput) -> str:
    """One line: the exam's title (else its id) and the student (else the submission id)."""
    exam = f"“{inp.exam_title}”" if inp.exam_title else f"exam {inp.exam_id}"
    who = f"student {inp.student_id}" if inp.student_id else f"submission {inp.submission_id}"
    summary = f"Grade {exam} · {who}"
    return summary if len(summary) <= SUMMARY_MAX else summary[: SUMMARY_MAX - 1] + "…"


def grading_details(inp: GradingInput) -> str:
    """The static details (Markdown): every id an operator may search for."""
    return (f"**Exam** {inp.exam_title or '-'} (`{inp.exam_id}`)  \n"
            f"**Student** {inp.student_id or '-'}  \n"
            f"**Submission** `{inp.submission_id}`  \n"
            f"**Tenant** `{inp.tenant_id}` · **Trace** `{inp.trace_id}`")
