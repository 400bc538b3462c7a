"""Submissions: intake (one transaction, then start grading) and the cached read model.

A submission records who posted it (the token's ``sub``); a caller whose only role is ``submitter``
reads only its own, any other is "not found" to it (see :mod:`api.auth`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from api.auth import SUBMITTER, PrincipalDep, may_read_submission
from api.deps import CacheDep, PoolsDep, SettingsDep, SubmissionId, TemporalDep, TenantDep, TraceIdDep, x_cache
from api.errors import ProblemError
from api.schemas import SubmissionAccepted, SubmissionCreate, SubmissionOut
from infra.observability.tracing import current_trace_id
from infra.stores import submissions
from infra.temporal.starter import start_grading  # light: the workflow's input types, not the agent stack

if TYPE_CHECKING:  # temporalio is imported lazily at run time
    from temporalio.client import Client

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/submissions", tags=["submissions"])

START_TIMEOUT_SECONDS = 5.0
"""Longest the API waits for Temporal to accept the workflow start before leaving it to the reconciler."""


async def _start(temporal: Client | None, settings: object, created: submissions.CreatedSubmission,
                 tenant: str, exam_id: str, options: dict[str, Any], *, student_id: str = "") -> None:
    """Start the grading workflow; on any failure log it and rely on the outbox reconciler."""
    if temporal is None:
        logger.warning("temporal unavailable; %s left to the reconciler", created.workflow_id)
        return
    try:
        await asyncio.wait_for(
            start_grading(temporal, submission_id=created.submission_id, tenant_id=tenant, exam_id=exam_id,
                          trace_id=created.trace_id, settings=settings, student_id=student_id,
                          exam_title=created.exam_title, **options),
            START_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - the reconciler starts it later
        logger.warning("could not start %s (%s: %s); the reconciler will", created.workflow_id,
                       type(exc).__name__, exc)


@router.post("", status_code=202, response_model=SubmissionAccepted, dependencies=[SUBMITTER])
async def create_submission(body: SubmissionCreate, principal: PrincipalDep, tenant: TenantDep, pools: PoolsDep,
                            temporal: TemporalDep, settings: SettingsDep, trace_id: TraceIdDep, request: Request,
                            response: Response) -> dict:
    """Accept a submission: store it, its answers and ``submission.received`` together, then start grading.

    A failure to start the workflow after the commit still answers 202: the outbox relay's
    reconciler starts it later, so no submission is stranded.
    """
    exam_id = str(body.exam_id)
    trace_id = current_trace_id() or trace_id  # the request span's (it continues a valid traceparent)
    try:
        created = await submissions.create_submission(
            pools, tenant, exam_id=exam_id, student_id=body.student_id, answers=dict(body.answers),
            trace_id=trace_id, external_id=body.external_id, submitted_by=principal.sub)
    except submissions.ExamNotFoundError:
        raise ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found",
                           errors=[{"field": "exam_id", "message": "unknown exam"}]) from None
    except submissions.AnswerErrors as exc:
        raise ProblemError(422, "Some answers do not fit the exam; see errors.", type_="validation-error",
                           errors=exc.errors) from None
    await _start(temporal, settings, created, tenant, exam_id, request.app.state.grading_options,
                 student_id=body.student_id)
    response.headers["Location"] = f"/v1/submissions/{created.submission_id}"
    return {"submission_id": created.submission_id, "workflow_id": created.workflow_id,
            "trace_id": created.trace_id, "status": created.status}


@router.get("/{submission_id}", response_model=SubmissionOut)
async def get_submission(submission_id: SubmissionId, principal: PrincipalDep, tenant: TenantDep, pools: PoolsDep,
                         cache: CacheDep, response: Response) -> dict:
    """Read a submission and its results: Redis first, PostgreSQL on a miss (degraded when Redis is down).

    The ``X-Cache`` header says where the answer came from: ``hit``, ``miss`` or ``degraded``.
    """
    view, source = await submissions.read_submission(pools, cache, tenant, submission_id)
    if view is None or not may_read_submission(principal, view.get("submitted_by")):
        raise ProblemError(404, f"No submission {submission_id!r} for this tenant.",
                           type_="submission-not-found")
    response.headers["X-Cache"] = x_cache(source)
    return view
