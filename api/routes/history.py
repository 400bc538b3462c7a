"""Score history: ``GET /v1/submissions/{id}/history``, every change of every question's score.

Rows come from ``score_history`` (:mod:`infra.stores.history`), written in the same transaction
as each change. Whoever may read the submission may read its history (reviewers and admins, or the
submitter that created it); anyone else gets the same 404 as for a submission of another tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import PrincipalDep, may_read_submission
from api.deps import PoolsDep, SubmissionId, TenantDep
from api.errors import ProblemError
from api.schemas_grades import HistoryPage
from infra.stores import history, submissions

router = APIRouter(prefix="/v1/submissions", tags=["history"])


@router.get("/{submission_id}/history", response_model=HistoryPage,
            responses={404: {"description": "No such submission for this tenant (or not the caller's)."}})
async def get_history(submission_id: SubmissionId, principal: PrincipalDep, tenant: TenantDep, pools: PoolsDep,
                      page_size: Annotated[int, Query(ge=1, le=500, description="Rows per page.")] = 100,
                      cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$",
                                                         description="`next_cursor` of the page before.")] = None,
                      ) -> HistoryPage:
    """Every score change of the submission, oldest first: old and new score, source, actor, reason, time."""
    stored = await submissions.load_status(pools, tenant, submission_id)
    if stored is None or not may_read_submission(principal, stored["submitted_by"]):
        raise ProblemError(404, f"No submission {submission_id!r} for this tenant.", type_="submission-not-found")
    rows = await history.load_history(pools, tenant, submission_id, after=int(cursor or 0), limit=page_size + 1)
    page = rows[:page_size]
    return HistoryPage.model_validate({"submission_id": submission_id, "items": page,
                                       "next_cursor": str(page[-1]["id"]) if len(rows) > page_size else None})
