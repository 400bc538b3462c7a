"""A submission's answers: ``GET /v1/submissions/{id}/answers`` (the dashboard shows them beside the grades).

The same read rule as the submission itself: reviewers and admins read every submission of their
tenant, a caller whose only role is ``submitter`` only the ones it created (any other is a 404).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import PrincipalDep, may_read_submission
from api.deps import PoolsDep, SubmissionId, TenantDep
from api.errors import ProblemError
from infra.stores import answers

router = APIRouter(prefix="/v1/submissions", tags=["submissions"])


class AnswersOut(BaseModel):
    """The answers of one submission, by question id, as they were submitted."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "submission_id": "0b9d5c1e-2f4a-4c8b-9e7d-1a2b3c4d5e6f",
        "answers": {"q1": "b", "q2": 42, "q3": "Plants turn light into glucose by photosynthesis."}}]})

    submission_id: str
    answers: dict[str, Any] = Field(description="Question id -> the answer (text, number or option).")


@router.get("/{submission_id}/answers", response_model=AnswersOut)
async def get_answers(submission_id: SubmissionId, principal: PrincipalDep, tenant: TenantDep,
                      pools: PoolsDep) -> dict:
    """Read a submission's answers (PostgreSQL; a question left unanswered is absent)."""
    found = await answers.load_answers(pools, tenant, submission_id)
    if found is None or not may_read_submission(principal, found["submitted_by"]):
        raise ProblemError(404, f"No submission {submission_id!r} for this tenant.", type_="submission-not-found")
    return {"submission_id": submission_id, "answers": found["answers"]}
