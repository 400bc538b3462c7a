"""An operator's retry of a submission in ``needs_intervention``.

Used by ``POST /v1/submissions/{id}/retry`` and ``gradeflow retry``. The submission's workflow
``grade-<id>`` failed when it marked the submission; the retry starts a new run of the same workflow
id (never while a run is in progress) that resumes from the checkpoint of the previous run: the
thread that run last reported (its ``get_progress`` query), else its run id. The retry is audited
(``review_log``: who, when, why, from which run) with an outbox event, before the run starts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from infra.constants import ORCHESTRATION_QUEUE, QUERY_PROGRESS, grading_workflow_id
from infra.db.pools import PoolManager
from infra.events.dead_letters import SubmissionRetry
from infra.stores.exams import parse_uuid
from infra.stores.interventions import SubmissionNotFoundError, check_retryable, record_retry
from infra.temporal.starter import start_grading

logger = logging.getLogger(__name__)

QUERY_TIMEOUT_SECONDS = 5.0
"""Longest wait for the previous run's progress query (it needs a worker to replay the run)."""


class RetryInProgressError(RuntimeError):
    """A run of the submission's workflow is in progress: nothing to retry."""


@dataclass(frozen=True)
class RetryStarted:
    """Answer of :func:`retry_submission`."""

    submission_id: str
    workflow_id: str
    run_id: str
    """Run started by the retry."""
    previous_run_id: str | None
    """The run that gave up (``None``: the workflow was never started)."""
    resume_thread_id: str
    """Checkpoint thread the new run resumes from (empty: none known; it grades afresh)."""


async def _previous_run(client: Client, workflow_id: str) -> tuple[str | None, str]:
    """The last run's id and the checkpoint thread it reported; raise if it is still running."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None, ""
        raise
    if desc.status == WorkflowExecutionStatus.RUNNING:
        raise RetryInProgressError(f"workflow {workflow_id} run {desc.run_id} is still running")
    thread_id = desc.run_id
    try:
        view: Any = await asyncio.wait_for(handle.query(QUERY_PROGRESS), QUERY_TIMEOUT_SECONDS)
        details = view.get("details", {}) if isinstance(view, dict) else getattr(view, "details", {})
        thread_id = str(details.get("thread_id") or thread_id)
    except Exception as exc:  # noqa: BLE001 - the run id is the thread unless a corrupt checkpoint moved it
        logger.warning("progress query of %s failed (%r); resuming from thread %s", workflow_id, exc, thread_id)
    return desc.run_id, thread_id


async def retry_submission(pools: PoolManager, client: Client, *, tenant_id: str, submission_id: str,
                           actor_id: str, reason: str, settings: Any = None,
                           task_queue: str = ORCHESTRATION_QUEUE, **overrides: Any) -> RetryStarted:
    """Audit and start a new grading run of a ``needs_intervention`` submission.

    Raises:
        infra.stores.interventions.SubmissionNotFoundError: No such submission for this tenant.
        infra.stores.interventions.NotRetryableError: Not in ``needs_intervention``.
        RetryInProgressError: A run is in progress (also when a concurrent retry won the race).
        temporalio.service.RPCError: Temporal is unreachable (retry later).

    """
    canonical = parse_uuid(submission_id)  # one spelling per id: the workflow id uses the canonical form
    if canonical is None:
        raise SubmissionNotFoundError(submission_id)
    submission_id = str(canonical)
    workflow_id = grading_workflow_id(submission_id)
    await check_retryable(pools, tenant_id, submission_id)  # tenant first: never describe another tenant's run
    previous_run_id, thread_id = await _previous_run(client, workflow_id)
    target = await record_retry(pools, tenant_id, submission_id, actor_id=actor_id, reason=reason,
                                previous_run_id=previous_run_id)
    try:
        await start_grading(client, submission_id=target.submission_id, tenant_id=tenant_id,
                            exam_id=target.exam_id, trace_id=target.trace_id, settings=settings,
                            task_queue=task_queue, restart=True, resume_thread_id=thread_id, **overrides)
    except WorkflowAlreadyStartedError as exc:
        raise RetryInProgressError(f"workflow {workflow_id} is already running (a concurrent retry)") from exc
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    logger.info("retry of %s by %s: run %s resumes from thread %s (previous run %s)", submission_id, actor_id,
                run_id, thread_id or "-", previous_run_id or "-")
    return RetryStarted(target.submission_id, workflow_id, run_id, previous_run_id, thread_id)


def submission_retry(pools: PoolManager, client: Client, *, settings: Any = None,
                     **overrides: Any) -> SubmissionRetry:
    """The replay of a ``submission`` dead letter: :func:`retry_submission`, with these pools and client.

    The retry audits the dead letter itself (``replayed``, in the transaction of its audit row).
    """

    async def retry(tenant_id: str, submission_id: str, actor: str, reason: str) -> dict[str, Any]:
        started = await retry_submission(pools, client, tenant_id=tenant_id, submission_id=submission_id,
                                         actor_id=actor, reason=reason, settings=settings, **overrides)
        return {"workflow_id": started.workflow_id, "run_id": started.run_id,
                "previous_run_id": started.previous_run_id, "resume_thread_id": started.resume_thread_id}

    return retry
