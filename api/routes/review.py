"""Review of a graded submission: ``POST /v1/submissions/{id}/review`` (roles reviewer or admin).

- ``needs_review`` (its workflow waits for a reviewer): the decision goes to the workflow as the
  Temporal update ``submit_review``; the workflow applies the scores and feedback and sets the final
  status.
- ``completed``: a post-hoc override runs the review saga (:mod:`infra.sagas.review`): DB update with
  audit and outbox event, cache invalidation, live notification, each compensated on failure.
- any other status: 409. Overrides are checked first against the stored results: an unknown question
  or a score outside ``[0, max_points]`` is a 422 naming ``overrides.<question>.score``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from api.auth import require_roles
from api.deps import CacheDep, PoolsDep, SettingsDep, SubmissionId, TemporalDep, TenantDep, TraceIdDep
from api.errors import ProblemError
from api.schemas import ReviewCreate, SubmissionOut
from infra.constants import UPDATE_REVIEW, SubmissionStatus
from infra.sagas.review import OverrideRequest, ReviewSaga, SagaOutcome, SagaStatus, validate_overrides
from infra.security.tokens import Principal
from infra.stores import review, submissions
from infra.stores.writer import WriterOptions

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/submissions", tags=["review"])

ReviewerDep = Annotated[Principal, Depends(require_roles("reviewer"))]
UPDATE_TIMEOUT_SECONDS = 10.0
"""Longest the API waits for the workflow to accept the review update."""
MAX_WORKFLOW_FEEDBACK_BYTES = 256 * 1024
"""Largest JSON-encoded feedback sent to a workflow in one review (Temporal refuses payloads over 2 MB)."""
APPLY_TIMEOUT_SECONDS = 20.0
"""Longest the API waits for the workflow to apply an accepted review before answering 202."""
RETRY_AFTER = {"Retry-After": "2"}


def _not_found(submission_id: str) -> ProblemError:
    return ProblemError(404, f"No submission {submission_id!r} for this tenant.", type_="submission-not-found")


def _conflict(detail: str) -> ProblemError:
    return ProblemError(409, detail, type_="review-conflict")


async def _view(pools: Any, tenant: str, submission_id: str) -> dict[str, Any]:
    view = await submissions.load_submission(pools, tenant, submission_id)
    if view is None:
        raise _not_found(submission_id)
    return view


async def _via_workflow(temporal: Any, pools: Any, tenant: str, target: review.ReviewTarget,
                        reviewer: Principal, body: ReviewCreate) -> bool:
    """Send ``submit_review`` and wait for the workflow to apply it; ``False`` when still applying."""
    from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.types import ReviewAck, ReviewInput

    feedback = {q: o.feedback for q, o in body.overrides.items() if o.feedback is not None}
    if len(json.dumps(feedback).encode()) > MAX_WORKFLOW_FEEDBACK_BYTES:
        raise ProblemError(422, "The review's feedback is too large to send to the grading workflow.",
                           type_="validation-error",
                           errors=[{"field": "overrides", "message": "feedback over all questions must stay "
                                                                     f"under {MAX_WORKFLOW_FEEDBACK_BYTES} bytes"}])
    if temporal is None:
        raise ProblemError(503, "The workflow service is unavailable; retry shortly.", type_="temporal-unavailable",
                           headers=RETRY_AFTER)
    handle = temporal.get_workflow_handle(target.workflow_id)
    scores = {q: o.score for q, o in body.overrides.items()}
    decision = ReviewInput(reviewer=reviewer.sub, overrides=scores or None, approve=body.approve,
                           feedback=feedback or None)
    try:
        await asyncio.wait_for(handle.execute_update(UPDATE_REVIEW, decision, result_type=ReviewAck),
                               UPDATE_TIMEOUT_SECONDS)
    except WorkflowUpdateFailedError as exc:
        raise _conflict(f"The grading workflow is not awaiting review ({exc.cause or exc}).") from None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise _conflict(f"The grading workflow is not awaiting review ({exc.message}).") from None
        raise ProblemError(503, "The workflow service failed; retry shortly.", type_="temporal-unavailable",
                           headers=RETRY_AFTER) from exc
    except TimeoutError:
        raise ProblemError(503, "The grading workflow did not answer in time; retry shortly.",
                           type_="temporal-unavailable", headers=RETRY_AFTER) from None
    await review.audit_review(
        pools, tenant, target.submission_id, actor_id=reviewer.sub,
        action="review_approved" if body.approve else "review_rejected", reason=body.reason,
        before={"status": target.status, "scores": {q: float(target.results[q]["score"]) for q in scores},
                **({"feedback": {q: target.results[q]["feedback"] for q in feedback}} if feedback else {})},
        after={"approve": body.approve, "scores": scores, "workflow_id": target.workflow_id,
               **({"feedback": feedback} if feedback else {})})
    try:
        await asyncio.wait_for(handle.result(), APPLY_TIMEOUT_SECONDS)
    except TimeoutError:
        return False
    except WorkflowFailureError as exc:
        logger.error("review of %s accepted but the workflow failed: %s", target.submission_id, exc)
        raise ProblemError(500, "The review was accepted but applying it failed; the submission needs "
                                "intervention.", type_="review-failed") from None
    return True


async def _via_saga(pools: Any, cache: Any, tenant: str, target: review.ReviewTarget,
                    reviewer: Principal, body: ReviewCreate, trace_id: str, writer_options: WriterOptions) -> None:
    """Run the override saga on a completed submission; raise a problem unless it completed."""
    if not body.approve:
        raise _conflict("A completed grading cannot be rejected; override its scores instead.")
    if not body.overrides:
        raise ProblemError(422, "A completed submission is reviewed by overriding scores.",
                           type_="validation-error",
                           errors=[{"field": "overrides", "message": "at least one override is required"}])
    request = OverrideRequest(
        tenant_id=tenant, submission_id=target.submission_id, actor_id=reviewer.sub,
        overrides={q: (o.score, o.feedback) for q, o in body.overrides.items()},
        expected_version=target.version, reason=body.reason, trace_id=trace_id)
    # shielded: a client disconnect must not strand the saga half way
    outcome = await asyncio.shield(ReviewSaga(pools, cache=cache, writer_options=writer_options).run(request))
    raise_unless_applied(outcome, "override",
                         conflict=_conflict("The submission changed while the review was applied; reload and retry."))


def raise_unless_applied(outcome: SagaOutcome, change: str, *, conflict: ProblemError) -> None:
    """Raise the answer for a review saga that did not complete (nothing when it did).

    ``conflict`` (409) when a newer version won, 503 when it was rolled back (retry), 500 when the rollback
    itself failed (an operator has to intervene).
    """
    if outcome.status == SagaStatus.COMPLETED:
        return
    if outcome.conflict:
        raise conflict
    if outcome.status == SagaStatus.COMPENSATED:
        raise ProblemError(503, f"The {change} could not be applied and was rolled back (saga {outcome.saga_id}); "
                                "retry shortly.", type_="review-rolled-back", headers=RETRY_AFTER)
    raise ProblemError(500, f"The {change} failed and could not be fully rolled back (saga {outcome.saga_id}); "
                            "an operator has to intervene.", type_="review-needs-intervention")


@router.post("/{submission_id}/review", response_model=SubmissionOut,
             responses={202: {"model": SubmissionOut,
                              "description": "Review accepted; the workflow is still applying it."}})
async def review_submission(submission_id: SubmissionId, body: ReviewCreate, reviewer: ReviewerDep, tenant: TenantDep,
                            pools: PoolsDep, cache: CacheDep, temporal: TemporalDep, trace_id: TraceIdDep,
                            response: Response, settings: SettingsDep) -> dict:
    """Approve, reject or override a submission's grades; replies with the submission after the review.

    ``needs_review``: the decision is sent to the grading workflow (``approve=false`` fails the
    submission); 202 when the workflow has not applied it within the wait. ``completed``: the
    overrides run as a saga; a rolled-back saga is a 503, one that needs an operator a 500.
    """
    target = await review.load_target(pools, tenant, submission_id)
    if target is None:
        raise _not_found(submission_id)
    if target.status not in (SubmissionStatus.NEEDS_REVIEW, SubmissionStatus.COMPLETED):
        raise _conflict(f"A submission in status {target.status!r} cannot be reviewed.")
    overrides = {q: (o.score, o.feedback) for q, o in body.overrides.items()}
    errors = validate_overrides(target.results, overrides)
    if errors:
        raise ProblemError(422, "Some overrides do not fit the submission's results; see errors.",
                           type_="validation-error", errors=errors)
    if target.status == SubmissionStatus.NEEDS_REVIEW:
        applied = await _via_workflow(temporal, pools, tenant, target, reviewer, body)
        if not applied:
            response.status_code = 202
    else:
        await _via_saga(pools, cache, tenant, target, reviewer, body, trace_id, WriterOptions.from_settings(settings))
    return await _view(pools, tenant, submission_id)
