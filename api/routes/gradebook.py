"""Gradebook export: ``GET /v1/exams/{id}/grades.csv`` and ``GET /v1/exams/{id}/grades.jsonl``.

One row per submission of the exam (oldest first), a score column per question in exam order,
total, status and graded-at time; formats and escaping in :mod:`api.gradebook`. The body is
streamed from a server-side cursor inside the caller's tenant transaction (row-level security), in
constant memory: the first chunk leaves once the exam is found, so a missing exam (or another
tenant's) is still a 404 problem. Reviewers and admins only (a gradebook shows every student's grades).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth import AUTHOR
from api.deps import ExamId, PoolsDep, TenantDep
from api.errors import ProblemError
from api.gradebook import CSV_MEDIA_TYPE, JSONL_MEDIA_TYPE, GradebookBatches, render_csv, render_jsonl
from infra.stores import gradebook
from infra.stores.submissions import ExamNotFoundError

router = APIRouter(prefix="/v1/exams", tags=["exams"])

CSV_EXAMPLE = (
    "submission_id,student_id,external_id,status,q1,q2,total,max_total,graded_at\r\n"
    "0b6f3c1e-8d2a-4f4e-9a1b-2c3d4e5f6a7b,s-001,lms-17,completed,1,2.5,3.5,4,2026-11-29T22:41:07.512+00:00\r\n"
    "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6,'=HYPERLINK(\"x\"),,needs_review,0,,0,4,\r\n")
JSONL_EXAMPLE = (
    '{"submission_id":"0b6f3c1e-8d2a-4f4e-9a1b-2c3d4e5f6a7b","student_id":"s-001","external_id":"lms-17",'
    '"status":"completed","scores":{"q1":1,"q2":2.5},"total":3.5,"max_total":4,'
    '"graded_at":"2026-11-29T22:41:07.512+00:00"}\n')

Feedback = Annotated[bool, Query(description="Add each question's feedback (CSV: a `<question>_feedback` column "
                                             "after each score; JSON Lines: a `feedback` object).")]


def _doc(media_type: str, example: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": "The gradebook, streamed.", "content": {media_type: {
        "schema": {"type": "string"}, "example": example}}}}


async def _open(pools: Any, tenant: str, exam_id: str, feedback: bool) -> tuple[gradebook.GradebookHeader,
                                                                               GradebookBatches]:
    """Start the export (tenant transaction, questions read); 404 problem for an unknown exam."""
    batches = gradebook.gradebook(pools, tenant, exam_id, feedback=feedback)
    try:
        header = await anext(batches)
    except ExamNotFoundError:
        raise ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found") from None
    assert isinstance(header, gradebook.GradebookHeader)
    return header, batches


def _disposition(exam_id: str, extension: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="grades-{exam_id}.{extension}"',
            "Cache-Control": "no-store"}


@router.get("/{exam_id}/grades.csv", response_class=StreamingResponse, dependencies=[AUTHOR],
            responses=_doc("text/csv", CSV_EXAMPLE))
async def grades_csv(exam_id: ExamId, tenant: TenantDep, pools: PoolsDep,
                     feedback: Feedback = False) -> StreamingResponse:
    """The exam's gradebook as CSV (RFC 4180; formula-like text cells prefixed with `'`, numbers never).

    Columns: `submission_id, student_id, external_id, status`, one per question (its id, exam order),
    `total, max_total, graded_at`. An empty cell is a missing value (not graded yet).
    """
    header, batches = await _open(pools, tenant, exam_id, feedback)
    return StreamingResponse(render_csv(header, batches, feedback=feedback), media_type=CSV_MEDIA_TYPE,
                             headers=_disposition(exam_id, "csv"))


@router.get("/{exam_id}/grades.jsonl", response_class=StreamingResponse, dependencies=[AUTHOR],
            responses=_doc(JSONL_MEDIA_TYPE, JSONL_EXAMPLE))
async def grades_jsonl(exam_id: ExamId, tenant: TenantDep, pools: PoolsDep,
                       feedback: Feedback = False) -> StreamingResponse:
    """The exam's gradebook as JSON Lines: one object per submission, `scores` keyed by question id.

    Numbers are written exactly as stored; `null` is a missing value.
    """
    header, batches = await _open(pools, tenant, exam_id, feedback)
    return StreamingResponse(render_jsonl(header, batches), media_type=JSONL_MEDIA_TYPE,
                             headers=_disposition(exam_id, "jsonl"))
