"""Batches: grade many submissions of one exam, at most ``max_concurrent`` at once.

``POST /v1/exams/{id}/batches`` stores the batch (new submissions through the single-submission
intake, in one transaction) and starts ``BatchGradingWorkflow`` (``batch-<batch_id>``), whose
children are the submissions' ``GradingWorkflow``s (``grade-<submission_id>``). ``GET
/v1/batches/{id}`` asks the running batch workflow for its progress, and the database once it has
finished (or Temporal cannot answer). ``POST /v1/exams/{id}/regrade`` is a batch of finished
submissions graded again (``regrade``: a new run of each ``grade-<id>``). Reviewers and admins only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request, Response

from api.auth import AUTHOR, PrincipalDep
from api.deps import BatchId, ExamId, PoolsDep, SettingsDep, TemporalDep, TenantDep, TraceIdDep
from api.errors import ProblemError
from api.routes.progress import _query
from api.schemas import BatchAccepted, BatchCreate, BatchOut, RegradeCreate
from infra.observability.tracing import current_trace_id
from infra.stores import batches, submissions
from infra.temporal.batches import start_batch

logger = logging.getLogger(__name__)

router = APIRouter(tags=["batches"])

START_TIMEOUT_SECONDS = 10.0
"""Longest the API waits for Temporal to accept the batch's start."""


async def _start(temporal: Any, pools: Any, settings: Any, created: batches.CreatedBatch, tenant: str,
                 options: dict[str, Any], *, regrade: bool = False, keep_reviewed: bool = False) -> None:
    """Start the batch workflow and mark the batch started; on failure only log it.

    The batch is stored unstarted: the reconciler (``gradeflow relay``) starts it after
    ``GRADEFLOW_RECONCILE_AFTER_SECONDS``, regrades included.
    """
    if temporal is None:
        logger.warning("temporal unavailable; batch %s left to the reconciler", created.workflow_id)
        return
    try:
        await asyncio.wait_for(start_batch(
            temporal, batch_id=created.batch_id, workflow_id=created.workflow_id, tenant_id=tenant,
            exam_id=created.exam_id, trace_id=created.trace_id,
            items=[(i.submission_id, i.trace_id, i.student_id) for i in created.items],
            max_concurrent=created.max_concurrent, exam_title=created.exam_title,
            settings=settings, regrade=regrade, keep_reviewed=keep_reviewed, **options), START_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - stored unstarted: the reconciler starts it
        logger.warning("could not start batch %s (%s: %s); the reconciler will", created.workflow_id,
                       type(exc).__name__, exc)
        return
    try:
        await batches.mark_started(pools, tenant, created.batch_id)
    except Exception as exc:  # noqa: BLE001 - the reconciler's start finds the running workflow and marks it
        logger.warning("batch %s started but not marked (%s: %s)", created.workflow_id, type(exc).__name__, exc)


@router.post("/v1/exams/{exam_id}/batches", status_code=202, response_model=BatchAccepted,
             dependencies=[AUTHOR])
async def create_batch(exam_id: ExamId, body: BatchCreate, principal: PrincipalDep, tenant: TenantDep,
                       pools: PoolsDep, temporal: TemporalDep, settings: SettingsDep, trace_id: TraceIdDep,
                       request: Request, response: Response) -> dict:
    """Store a batch of new and/or existing submissions and start grading them, ``max_concurrent`` at once.

    New submissions are stored like ``POST /v1/submissions`` (one transaction for the whole batch:
    any answer that does not fit stores nothing, 422 naming ``submissions[i].answers.<qid>``); a repeated
    ``external_id`` reuses the earlier submission. Send ``Idempotency-Key`` to make a retried request
    return the first reply. Up to 500 submissions (and a 1 MiB body). As for a single submission, a
    failure to start the batch after the commit still answers 202 (see :func:`_start`).
    """
    trace_id = current_trace_id() or trace_id
    max_concurrent = min(body.max_concurrent, settings.batch_max_concurrent)
    try:
        created = await batches.create_batch(
            pools, tenant, exam_id=exam_id, trace_id=trace_id, max_concurrent=max_concurrent,
            new_submissions=[s.model_dump() for s in body.submissions],
            submission_ids=[str(i) for i in body.submission_ids], created_by=principal.sub)
    except submissions.ExamNotFoundError:
        raise ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found") from None
    except submissions.AnswerErrors as exc:
        raise ProblemError(422, "Some answers do not fit the exam; see errors.", type_="validation-error",
                           errors=exc.errors) from None
    except batches.UnknownSubmissionsError as exc:
        raise ProblemError(422, "Some submission ids are not submissions of this exam.",
                           type_="validation-error",
                           errors=[{"field": "submission_ids", "message": f"unknown submission {i}"}
                                   for i in exc.ids]) from None
    await _start(temporal, pools, settings, created, tenant, dict(request.app.state.grading_options))
    return _accepted(created, response)


def _accepted(created: batches.CreatedBatch, response: Response) -> dict:
    response.headers["Location"] = f"/v1/batches/{created.batch_id}"
    return {"batch_id": created.batch_id, "workflow_id": created.workflow_id, "exam_id": created.exam_id,
            "trace_id": created.trace_id, "total": len(created.items), "max_concurrent": created.max_concurrent,
            "submission_ids": [i.submission_id for i in created.items]}


@router.post("/v1/exams/{exam_id}/regrade", status_code=202, response_model=BatchAccepted, dependencies=[AUTHOR])
async def regrade(exam_id: ExamId, body: RegradeCreate, principal: PrincipalDep, tenant: TenantDep,
                  pools: PoolsDep, temporal: TemporalDep, settings: SettingsDep, trace_id: TraceIdDep,
                  request: Request, response: Response) -> dict:
    """Grade finished submissions again with the current rubric, through a batch (``GET /v1/batches/{id}``).

    Each selected submission gets a new run of its ``grade-<id>`` workflow (a submission still grading
    or waiting for review is not selected: never two runs at once). A score a reviewer set is kept
    unless ``override_reviewed``. Send ``Idempotency-Key`` so a retried request starts nothing new.
    """
    trace_id = current_trace_id() or trace_id
    max_concurrent = min(body.max_concurrent, settings.batch_max_concurrent)
    try:
        ids = await batches.regrade_candidates(pools, tenant, exam_id=exam_id, scope=body.scope,
                                               rubric_version=body.rubric_version,
                                               submission_ids=[str(i) for i in body.submission_ids])
        created = await batches.create_batch(pools, tenant, exam_id=exam_id, trace_id=trace_id,
                                             max_concurrent=max_concurrent, submission_ids=ids,
                                             created_by=principal.sub, kind="regrade",
                                             override_reviewed=body.override_reviewed)
    except submissions.ExamNotFoundError:
        raise ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found") from None
    except batches.UnknownSubmissionsError as exc:
        raise ProblemError(422, "Some submission ids are not finished submissions of this exam.",
                           type_="validation-error",
                           errors=[{"field": "submission_ids", "message": f"not regradable: {i}"}
                                   for i in exc.ids]) from None
    await _start(temporal, pools, settings, created, tenant, dict(request.app.state.grading_options),
                 regrade=True, keep_reviewed=not body.override_reviewed)
    return _accepted(created, response)


def _from_query(view: dict[str, Any]) -> tuple[dict[str, int], int, float]:
    details = view.get("details") or {}
    counts = {str(k): int(v) for k, v in (details.get("by_status") or {}).items()}
    for key in ("running", "pending"):
        if details.get(key):
            counts[key] = int(details[key])
    return counts, int(details.get("done") or 0), float(view.get("percentage") or 0.0)


@router.get("/v1/batches/{batch_id}", response_model=BatchOut, dependencies=[AUTHOR])
async def get_batch(batch_id: BatchId, tenant: TenantDep, pools: PoolsDep, temporal: TemporalDep) -> dict:
    """A batch's progress: counts by status and a percentage (Temporal while it runs, else the database)."""
    batch = await batches.load_batch(pools, tenant, batch_id)
    if batch is None:
        raise ProblemError(404, f"No batch {batch_id!r} for this tenant.", type_="batch-not-found")
    total = int(batch["total"])
    view = await _query(temporal, batch["workflow_id"])
    if view is not None:
        counts, done, percentage = _from_query(view)
        source = "temporal"
    else:
        counts = await batches.batch_counts(pools, tenant, batch_id)
        done = sum(n for status, n in counts.items() if status in batches.DONE_STATUSES)
        percentage = 100.0 * done / total if total else 100.0
        source = "database"
    return {"batch_id": batch["id"], "exam_id": batch["exam_id"], "workflow_id": batch["workflow_id"],
            "total": total, "max_concurrent": batch["max_concurrent"], "counts": counts, "done": done,
            "percentage": round(percentage, 2), "source": source, "kind": batch["kind"],
            "created_at": batch["created_at"].isoformat()}
