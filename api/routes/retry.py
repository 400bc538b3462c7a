"""Operators' retry of a submission that needs intervention: ``POST /v1/submissions/{id}/retry`` (admin).

The new run of ``grade-<id>`` resumes from the previous run's checkpoint; the retry is audited
(who, when, why). 404 unknown submission, 409 not in ``needs_intervention`` or a run in progress,
503 while Temporal is unreachable.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from api.auth import require_roles
from api.deps import PoolsDep, SettingsDep, SubmissionId, TemporalDep, TenantDep
from api.errors import ProblemError
from api.schemas import RetryCreate, RetryOut
from infra.security.tokens import Principal
from infra.stores.interventions import NotRetryableError, SubmissionNotFoundError

router = APIRouter(prefix="/v1/submissions", tags=["operations"])

AdminDep = Annotated[Principal, Depends(require_roles("admin"))]
RETRY_AFTER = {"Retry-After": "2"}


@router.post("/{submission_id}/retry", status_code=202, response_model=RetryOut)
async def retry(submission_id: SubmissionId, body: RetryCreate, admin: AdminDep, tenant: TenantDep, pools: PoolsDep,
                temporal: TemporalDep, settings: SettingsDep, request: Request, response: Response) -> RetryOut:
    """Start a new grading run of a ``needs_intervention`` submission, resuming from its last checkpoint."""
    from temporalio.service import RPCError  # imported on use: the workflow types pull in the agent stack

    from infra.temporal.retry import RetryInProgressError, retry_submission

    if temporal is None:
        raise ProblemError(503, "The workflow service is unreachable; retry shortly.", type_="temporal-unavailable",
                           headers=RETRY_AFTER)
    try:
        started = await retry_submission(pools, temporal, tenant_id=tenant, submission_id=submission_id,
                                         actor_id=admin.sub, reason=body.reason, settings=settings,
                                         **request.app.state.grading_options)
    except SubmissionNotFoundError:
        raise ProblemError(404, f"No submission {submission_id!r} for this tenant.",
                           type_="submission-not-found") from None
    except NotRetryableError as exc:
        raise ProblemError(409, f"Only a needs_intervention submission can be retried; this one is {exc.status!r}.",
                           type_="retry-conflict") from None
    except RetryInProgressError as exc:
        raise ProblemError(409, f"A grading run of this submission is in progress ({exc}).",
                           type_="retry-conflict") from None
    except RPCError as exc:
        raise ProblemError(503, "The workflow service failed; retry shortly.", type_="temporal-unavailable",
                           headers=RETRY_AFTER) from exc
    response.headers["Location"] = f"/v1/submissions/{started.submission_id}"
    return RetryOut(submission_id=started.submission_id, workflow_id=started.workflow_id, run_id=started.run_id,
                    previous_run_id=started.previous_run_id, resume_thread_id=started.resume_thread_id)
