"""Start a batch's ``BatchGradingWorkflow`` (workflow id ``batch-<batch_id>``) exactly once.

The batch workflow starts each submission's ``GradingWorkflow`` as a child (``grade-<submission_id>``,
tenant, trace and submission in memo and search attributes), at most ``max_concurrent`` at once.
The outbox relay's reconciler leaves the batch's ``submission.received`` events alone (their payload
names the batch), so the bound holds.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from infra.constants import BATCH_GRADING_WORKFLOW, ORCHESTRATION_QUEUE
from infra.temporal.starter import TENANT_KEY, TRACE_KEY, grading_input
from workflows.types import BatchInput, GradingInput

logger = logging.getLogger(__name__)


def batch_input(*, batch_id: str, tenant_id: str, exam_id: str, items: list[tuple[str, str]],
                max_concurrent: int, settings: Any = None, regrade: bool = False, keep_reviewed: bool = False,
                **overrides: Any) -> BatchInput:
    """Build the batch workflow's input; ``items`` are ``(submission_id, trace_id)`` pairs.

    ``regrade``: finished gradings get a new run; ``keep_reviewed``: scores a reviewer set are kept.
    """
    if keep_reviewed:
        overrides = {**overrides, "keep_reviewed": True}
    children: list[GradingInput] = [
        grading_input(submission_id=sid, tenant_id=tenant_id, exam_id=exam_id, trace_id=trace,
                      settings=settings, **overrides) for sid, trace in items]
    return BatchInput(submissions=children, max_concurrent=max_concurrent, batch_id=batch_id, regrade=regrade)


async def start_batch(client: Client, *, batch_id: str, workflow_id: str, tenant_id: str, exam_id: str,
                      trace_id: str, items: list[tuple[str, str]], max_concurrent: int, settings: Any = None,
                      task_queue: str = ORCHESTRATION_QUEUE, regrade: bool = False, keep_reviewed: bool = False,
                      **overrides: Any) -> str:
    """Start (or find) a batch's workflow; a repeated start of the same batch starts nothing new.

    ``overrides`` are extra :class:`GradingInput` fields of every child (e.g. ``cognitive_queue``);
    ``regrade`` and ``keep_reviewed`` as in :func:`batch_input`.
    Returns the workflow id.
    """
    inp = batch_input(batch_id=batch_id, tenant_id=tenant_id, exam_id=exam_id, items=items,
                      max_concurrent=max_concurrent, settings=settings, regrade=regrade,
                      keep_reviewed=keep_reviewed, **overrides)
    attributes = TypedSearchAttributes([SearchAttributePair(TENANT_KEY, tenant_id),
                                        SearchAttributePair(TRACE_KEY, trace_id)])
    try:
        await client.start_workflow(
            BATCH_GRADING_WORKFLOW, inp, id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={"trace_id": trace_id, "tenant_id": tenant_id, "batch_id": batch_id},
            static_summary=f"Grade {len(items)} submission(s) of exam {exam_id} (tenant {tenant_id}), "
                           f"at most {max_concurrent} at once",
            search_attributes=attributes)
    except WorkflowAlreadyStartedError:
        logger.info("batch %s already ran; not starting it again", workflow_id)
    return workflow_id
