"""Start a batch's ``BatchGradingWorkflow`` (workflow id ``batch-<batch_id>``) exactly once.

The batch workflow starts each submission's ``GradingWorkflow`` as a child (``grade-<submission_id>``,
tenant, trace and submission in memo and search attributes), at most ``max_concurrent`` at once.
The outbox relay's reconciler leaves the batch's ``submission.received`` events alone (their payload
names the batch), so the bound holds. Once Temporal accepts the start, the batch is marked started
(``batches.started_at``); a batch the API could not start (Temporal unreachable) is started later by the
reconciler's sweep of unstarted batches (:func:`start_recorded_batch`), so a regrade is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
from infra.db.pools import PoolManager
from infra.stores import batches as batch_store
from infra.temporal.starter import grading_input
from workflows.types import BatchInput, GradingInput
from workflows.visibility import EXAM_KEY, TENANT_KEY, TRACE_KEY

logger = logging.getLogger(__name__)


def batch_input(*, batch_id: str, tenant_id: str, exam_id: str, items: Sequence[tuple[str, ...]],
                max_concurrent: int, settings: Any = None, regrade: bool = False, keep_reviewed: bool = False,
                exam_title: str = "", **overrides: Any) -> BatchInput:
    """Build the batch workflow's input; ``items`` are ``(submission_id, trace_id[, student_id])``.

    The batch publishes its progress to the exam's live feeds (``batch.progress``).
    ``regrade``: finished gradings get a new run; ``keep_reviewed``: scores a reviewer set are kept;
    ``exam_title`` and the student ids go to each child's search attributes and static summary.
    """
    if keep_reviewed:
        overrides = {**overrides, "keep_reviewed": True}
    children: list[GradingInput] = [
        grading_input(submission_id=item[0], tenant_id=tenant_id, exam_id=exam_id, trace_id=item[1],
                      settings=settings, student_id=item[2] if len(item) > 2 else "", exam_title=exam_title,
                      **overrides) for item in items]
    return BatchInput(submissions=children, max_concurrent=max_concurrent, batch_id=batch_id, regrade=regrade,
                      progress_events=True)


async def start_batch(client: Client, *, batch_id: str, workflow_id: str, tenant_id: str, exam_id: str,
                      trace_id: str, items: Sequence[tuple[str, ...]], max_concurrent: int, settings: Any = None,
                      task_queue: str = ORCHESTRATION_QUEUE, regrade: bool = False, keep_reviewed: bool = False,
                      exam_title: str = "", **overrides: Any) -> str:
    """Start (or find) a batch's workflow; a repeated start of the same batch starts nothing new.

    ``overrides`` are extra :class:`GradingInput` fields of every child (e.g. ``cognitive_queue``);
    ``regrade``, ``keep_reviewed`` and ``exam_title`` as in :func:`batch_input`.
    Returns the workflow id.
    """
    inp = batch_input(batch_id=batch_id, tenant_id=tenant_id, exam_id=exam_id, items=items,
                      max_concurrent=max_concurrent, settings=settings, regrade=regrade,
                      keep_reviewed=keep_reviewed, exam_title=exam_title, **overrides)
    attributes = TypedSearchAttributes([SearchAttributePair(TENANT_KEY, tenant_id),
                                        SearchAttributePair(TRACE_KEY, trace_id),
                                        SearchAttributePair(EXAM_KEY, exam_id)])
    try:
        await client.start_workflow(
            BATCH_GRADING_WORKFLOW, inp, id=workflow_id, task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={"trace_id": trace_id, "tenant_id": tenant_id, "batch_id": batch_id},
            static_summary=f"Grade {len(items)} submission(s) of {exam_title or 'exam ' + exam_id}, "
                           f"at most {max_concurrent} at once",
            search_attributes=attributes)
    except WorkflowAlreadyStartedError:
        logger.info("batch %s already ran; not starting it again", workflow_id)
    return workflow_id


async def start_recorded_batch(client: Client, pools: PoolManager, tenant_id: str, batch: dict[str, Any], *,
                               settings: Any = None, task_queue: str = ORCHESTRATION_QUEUE,
                               **overrides: Any) -> str:
    """Start a stored batch (:func:`infra.stores.batches.load_batch`) as it was asked for, then mark it started.

    A regrade batch regrades (``kind``), keeping reviewers' scores unless it said ``override_reviewed``.
    Starting twice is harmless (:func:`start_batch` finds the running or finished workflow).
    """
    regrade = batch.get("kind") == "regrade"
    workflow_id = await start_batch(
        client, batch_id=str(batch["id"]), workflow_id=str(batch["workflow_id"]), tenant_id=tenant_id,
        exam_id=str(batch["exam_id"]), trace_id=str(batch["trace_id"] or ""),
        items=[(str(i["submission_id"]), str(i["trace_id"] or ""), str(i.get("student_id") or ""))
               for i in batch["items"]],
        max_concurrent=int(batch["max_concurrent"]), settings=settings, task_queue=task_queue, regrade=regrade,
        keep_reviewed=regrade and not batch.get("override_reviewed"), exam_title=str(batch.get("exam_title") or ""),
        **overrides)
    await batch_store.mark_started(pools, tenant_id, str(batch["id"]))
    return workflow_id
