"""Counts of an exam's submissions by status: ``GET /v1/exams/{id}/counts`` (reviewers and admins).

The exam page of the dashboard shows them and reads them again when its live feed reports a status
change; the exam feed's snapshot carries the same counts.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AUTHOR
from api.deps import CacheDep, ExamId, PoolsDep, TenantDep
from api.errors import ProblemError
from infra.stores import exams, submissions

router = APIRouter(prefix="/v1/exams", tags=["exams"])


class ExamCountsOut(BaseModel):
    """How many of an exam's submissions are in each status (statuses with none are absent)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "exam_id": "6f1c2a9e-3b7d-4c1e-9a51-0c2f7d8e9b10", "total": 500,
        "submissions_by_status": {"completed": 431, "needs_review": 12, "grading": 20, "queued": 37}}]})

    exam_id: str
    total: int = Field(ge=0, description="All of the exam's submissions.")
    submissions_by_status: dict[str, int]


@router.get("/{exam_id}/counts", response_model=ExamCountsOut, dependencies=[AUTHOR])
async def get_exam_counts(exam_id: ExamId, tenant: TenantDep, pools: PoolsDep, cache: CacheDep) -> dict:
    """Count the exam's submissions per status (404 for an exam the tenant does not have)."""
    exam, _ = await exams.read_exam(pools, cache, tenant, exam_id)
    if exam is None:
        raise ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found")
    counts = await submissions.count_by_status(pools, tenant, exam_id)
    return {"exam_id": exam_id, "total": sum(counts.values()), "submissions_by_status": counts}
