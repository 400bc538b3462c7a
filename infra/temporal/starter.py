"""Start a submission's ``GradingWorkflow`` exactly once (API after commit, outbox reconciler).

The workflow id is ``grade-<submission_id>``. ``USE_EXISTING`` makes a start while one is running
return that run; ``REJECT_DUPLICATE`` makes a start after it finished fail with
``WorkflowAlreadyStartedError``, which is treated as "already started": a finished grading is
never re-run. Search attributes (tenant, trace, submission, exam, student, status) and the static
summary (exam title, student) come from :mod:`workflows.visibility`, as for a batch's children.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from infra.constants import GRADING_WORKFLOW, ORCHESTRATION_QUEUE, EventType, grading_workflow_id
from infra.observability.tracing import grading_baggage, trace_context, with_tracing
from workflows.types import GradingInput
from workflows.visibility import (
    SUBMISSION_KEY,
    TENANT_KEY,
    TRACE_KEY,
    grading_details,
    grading_search_attributes,
    grading_summary,
)

logger = logging.getLogger(__name__)

__all__ = ["SUBMISSION_KEY", "TENANT_KEY", "TRACE_KEY", "grading_input", "make_reconciler_handler", "start_grading"]


def grading_input(*, submission_id: str, tenant_id: str, exam_id: str, trace_id: str,
                  settings: Any = None, **overrides: Any) -> GradingInput:
    """Build a :class:`GradingInput`, taking timeouts from settings when given."""
    values: dict[str, Any] = {}
    if settings is not None:
        values = {"heartbeat_timeout_s": settings.heartbeat_timeout, "agent_timeout_s": settings.agent_timeout,
                  "review_deadline_s": settings.review_deadline, "agent_max_attempts": settings.agent_max_attempts,
                  "outage_retry_timeout_s": settings.outage_retry_timeout,
                  "retry_max_interval_s": settings.retry_max_interval}
    values.update(overrides)
    return GradingInput(submission_id=submission_id, tenant_id=tenant_id, exam_id=exam_id,
                        trace_id=trace_id, **values)


async def start_grading(client: Client, *, submission_id: str, tenant_id: str, exam_id: str, trace_id: str,
                        settings: Any = None, task_queue: str = ORCHESTRATION_QUEUE, restart: bool = False,
                        **overrides: Any) -> str:
    """Start (or find) the grading workflow of a submission.

    Args:
        client: Temporal client.
        submission_id: Submission to grade.
        tenant_id: Its tenant (memo + ``TenantId`` search attribute).
        exam_id: Its exam.
        trace_id: Request trace id (memo + ``TraceId`` search attribute).
        settings: Optional settings supplying the timeouts.
        task_queue: Orchestration task queue (tests pass their own).
        restart: An operator's retry: start a new run after a closed one (``ALLOW_DUPLICATE``), and
            fail with ``WorkflowAlreadyStartedError`` while one runs (never two runs at once).
        **overrides: Extra :class:`GradingInput` fields (e.g. ``cognitive_queue``; ``student_id`` and
            ``exam_title`` for the ``GradeflowStudent`` search attribute and the static summary).

    Returns:
        The workflow id, whether this call started it or it already existed / finished.

    Raises:
        WorkflowAlreadyStartedError: Only with ``restart``: a run is in progress.

    """
    workflow_id = grading_workflow_id(submission_id)
    inp = grading_input(submission_id=submission_id, tenant_id=tenant_id, exam_id=exam_id,
                        trace_id=trace_id, settings=settings, **overrides)
    conflict, reuse = ((WorkflowIDConflictPolicy.FAIL, WorkflowIDReusePolicy.ALLOW_DUPLICATE) if restart else
                       (WorkflowIDConflictPolicy.USE_EXISTING, WorkflowIDReusePolicy.REJECT_DUPLICATE))
    try:
        # Baggage: the workflow's and activities' spans and log lines name the tenant and submission.
        with grading_baggage(tenant_id, submission_id):
            await client.start_workflow(
                GRADING_WORKFLOW, inp, id=workflow_id, task_queue=task_queue,
                id_conflict_policy=conflict, id_reuse_policy=reuse,
                memo={"trace_id": trace_id, "tenant_id": tenant_id},
                static_summary=grading_summary(inp), static_details=grading_details(inp),
                search_attributes=grading_search_attributes(inp),
            )
    except WorkflowAlreadyStartedError:
        if restart:
            raise
        logger.info("grading %s already ran; not starting it again", workflow_id)
    return workflow_id


def make_reconciler_handler(client: Client, *, task_queue: str = ORCHESTRATION_QUEUE, settings: Any = None,
                            **overrides: Any) -> Callable[[Any], Awaitable[None]]:
    """Build the outbox relay handler that starts gradings for ``submission.received`` events.

    The handler reads ``submission_id``, ``exam_id`` and ``trace_id`` from the event payload
    (falling back to the envelope's ``target_id`` and ``trace_id``); other event types are ignored, and so
    are events of a batch's submissions (payload ``batch_id``): the batch workflow starts them, at most
    ``max_concurrent`` at once (the stranded-submission sweep still starts any a lost batch never did).
    Starting is idempotent, so redelivered events are harmless. ``overrides`` are passed on to
    :func:`start_grading` (e.g. ``cognitive_queue``). Starts go through a traced copy of ``client``
    under the stored trace id, so the workflow, its activities and graph nodes continue that trace.
    """
    client = with_tracing(client)

    async def handle(event: Any) -> None:
        if event.event_type != EventType.SUBMISSION_RECEIVED:
            return
        payload = event.payload or {}
        if payload.get("batch_id"):
            return
        submission_id = str(payload.get("submission_id") or event.target_id)
        exam_id = str(payload.get("exam_id") or "")
        trace_id = str(payload.get("trace_id") or event.trace_id or "")
        with trace_context(trace_id):  # no request span here: the workflow's spans continue the stored trace
            await start_grading(client, submission_id=submission_id, tenant_id=event.tenant_id,
                                exam_id=exam_id, trace_id=trace_id, settings=settings, task_queue=task_queue,
                                **overrides)

    return handle
