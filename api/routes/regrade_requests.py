"""Regrade requests: the submitter asks, a reviewer accepts (new score through the review saga) or rejects.

- ``POST /v1/submissions/{id}/regrade-requests`` (role ``submitter``, only for a submission the caller
  created; ``admin`` for any): one open request per question of a ``completed`` submission.
- ``GET /v1/regrade-requests?status=open`` and ``GET /v1/regrade-requests/{id}`` (reviewers): paged,
  oldest first.
- ``POST /v1/regrade-requests/{id}/accept`` (reviewers): the score goes through the review saga
  (:mod:`infra.sagas.review`) with history source ``request``; the request is marked ``accepted`` in
  the saga's DB transaction. ``POST /v1/regrade-requests/{id}/reject`` needs a reason.

Every step is audited in ``review_log`` and emits an outbox event (``regrade_request.created`` /
``regrade_request.resolved``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.auth import SUBMITTER, PrincipalDep, require_roles
from api.deps import CacheDep, PoolsDep, RegradeRequestId, SettingsDep, SubmissionId, TenantDep, TraceIdDep
from api.errors import ProblemError
from api.routes.review import raise_unless_applied
from api.schemas_grades import (
    RegradeRequestAccept,
    RegradeRequestCreate,
    RegradeRequestOut,
    RegradeRequestPage,
    RegradeRequestReject,
    RequestStatus,
)
from infra.constants import SubmissionStatus
from infra.sagas.review import OverrideRequest, ReviewSaga, validate_overrides
from infra.security.tokens import Principal
from infra.stores import regrade_requests as requests
from infra.stores import review
from infra.stores.writer import WriterOptions

router = APIRouter(tags=["regrade requests"])

ReviewerDep = Annotated[Principal, Depends(require_roles("reviewer"))]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such request (or submission) for this tenant."},
    409: {"description": "The request is not open, or the submission changed / is not completed."}}


def _not_found(what: str) -> ProblemError:
    return ProblemError(404, f"No {what} for this tenant.", type_="not-found")


def _conflict(detail: str) -> ProblemError:
    return ProblemError(409, detail, type_="regrade-request-conflict")


@router.post("/v1/submissions/{submission_id}/regrade-requests", status_code=201, response_model=RegradeRequestOut,
             dependencies=[SUBMITTER], responses=ERRORS)
async def create_regrade_request(submission_id: SubmissionId, body: RegradeRequestCreate, principal: PrincipalDep,
                                 tenant: TenantDep, pools: PoolsDep, trace_id: TraceIdDep) -> dict:
    """Ask for one question of a graded submission to be graded again (the submitter who created it)."""
    try:
        return await requests.create_request(
            pools, tenant, submission_id, question_id=body.question_id, reason=body.reason,
            requested_by=principal.sub, must_own="admin" not in principal.roles, trace_id=trace_id)
    except (requests.RequestNotFoundError, requests.NotSubmitterError):
        raise _not_found(f"submission {submission_id!r}") from None  # not the caller's: as if absent
    except requests.RequestConflictError as exc:
        raise _conflict(str(exc)) from None
    except requests.RequestRefusedError as exc:
        raise ProblemError(422, "The request does not fit the submission; see errors.", type_="validation-error",
                           errors=[{"field": exc.field, "message": exc.message}]) from None


@router.get("/v1/regrade-requests", response_model=RegradeRequestPage)
async def list_regrade_requests(reviewer: ReviewerDep, tenant: TenantDep, pools: PoolsDep,
                                status: RequestStatus = "open",
                                page_size: Annotated[int, Query(ge=1, le=100)] = 50,
                                cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$",
                                                                    description="`next_cursor` of the page before.")]
                                = None) -> dict:
    """Regrade requests in ``status`` (default ``open``), oldest first, one page at a time (reviewers)."""
    try:
        items, nxt = await requests.list_requests(pools, tenant, status=status, limit=page_size, cursor=cursor)
    except ValueError:
        raise ProblemError(422, "The cursor is not one of this list's.", type_="validation-error",
                           errors=[{"field": "cursor", "message": "not a cursor of this list"}]) from None
    return {"items": items, "next_cursor": nxt}


@router.get("/v1/regrade-requests/{request_id}", response_model=RegradeRequestOut, responses=ERRORS)
async def get_regrade_request(request_id: RegradeRequestId, reviewer: ReviewerDep, tenant: TenantDep,
                              pools: PoolsDep) -> dict:
    """One regrade request (reviewers)."""
    found = await requests.load_request(pools, tenant, request_id)
    if found is None:
        raise _not_found(f"regrade request {request_id!r}")
    return found


@router.post("/v1/regrade-requests/{request_id}/accept", response_model=RegradeRequestOut, responses=ERRORS)
async def accept_regrade_request(request_id: RegradeRequestId, body: RegradeRequestAccept, reviewer: ReviewerDep,
                                 tenant: TenantDep, pools: PoolsDep, cache: CacheDep, settings: SettingsDep,
                                 trace_id: TraceIdDep) -> dict:
    """Accept: the question gets ``score`` through the review saga (history source ``request``)."""
    found = await requests.load_request(pools, tenant, request_id)
    if found is None:
        raise _not_found(f"regrade request {request_id!r}")
    if found["status"] != "open":
        raise _conflict(f"The regrade request is already {found['status']}.")
    target = await review.load_target(pools, tenant, found["submission_id"])
    if target is None:
        raise _not_found(f"submission {found['submission_id']!r}")
    if target.status != SubmissionStatus.COMPLETED:
        raise _conflict(f"The submission is {target.status}; it is regraded or reviewed right now. Retry later.")
    qid = found["question_id"]
    errors = validate_overrides(target.results, {qid: (body.score, body.feedback)})
    if errors:
        raise ProblemError(422, "The score does not fit the question; see errors.", type_="validation-error",
                           errors=[{"field": "score", "message": e["message"]} for e in errors])
    saga = ReviewSaga(pools, cache=cache, writer_options=WriterOptions.from_settings(settings))
    outcome = await asyncio.shield(saga.run(OverrideRequest(
        tenant_id=tenant, submission_id=target.submission_id, actor_id=reviewer.sub,
        overrides={qid: (body.score, body.feedback)}, expected_version=target.version,
        reason=body.reason or f"regrade request {request_id} accepted", trace_id=trace_id, source="request",
        request_id=request_id)))
    raise_unless_applied(outcome, "score", conflict=_conflict(
        "The submission or the request changed while the score was applied; reload and retry."))
    accepted = await requests.load_request(pools, tenant, request_id)
    assert accepted is not None
    return accepted


@router.post("/v1/regrade-requests/{request_id}/reject", response_model=RegradeRequestOut, responses=ERRORS)
async def reject_regrade_request(request_id: RegradeRequestId, body: RegradeRequestReject, reviewer: ReviewerDep,
                                 tenant: TenantDep, pools: PoolsDep, trace_id: TraceIdDep) -> dict:
    """Reject: the grade stands; the reason is required and kept."""
    try:
        return await requests.reject_request(pools, tenant, request_id, actor_id=reviewer.sub, reason=body.reason,
                                             trace_id=trace_id)
    except requests.RequestNotFoundError:
        raise _not_found(f"regrade request {request_id!r}") from None
    except requests.RequestConflictError as exc:
        raise _conflict(str(exc)) from None
