"""``BatchGradingWorkflow``: grade many submissions as child ``GradingWorkflow``s, bounded.

At most ``max_concurrent`` children run at once (ARCHITECTURE property 21): a child is started
only after ``wait_condition`` sees a free slot, and the slot is freed when its result (or error)
arrives. ``get_progress`` aggregates the children's outcomes. With ``progress_events`` a publisher task
sends that progress to the exam's live feeds (activity ``publish_batch_progress``) at the start and
whenever children have finished since its last message: one activity in flight at a time, so messages
arrive in order and a burst of finished children costs one message, not one each.

``BatchInput`` lives in :mod:`workflows.types` (starting a batch imports no workflow code) and is
re-exported here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.batch import BatchActivities
    from activities.types import BatchProgressInput
    from infra.constants import BATCH_GRADING_WORKFLOW, QUERY_PROGRESS, grading_workflow_id
    from workflows.grading import GradingInput, GradingOutput, GradingWorkflow, ProgressView
    from workflows.types import BatchInput
    from workflows.visibility import grading_details, grading_search_attributes, grading_summary


@dataclass
class BatchOutput:
    """Result of :class:`BatchGradingWorkflow`."""

    statuses: dict[str, str] = field(default_factory=dict)
    """submission_id -> final status (``failed`` for a failed child, ``already_started`` if skipped)."""
    max_running: int = 0
    """Most children observed running at once."""


__all__ = ["BatchGradingWorkflow", "BatchInput", "BatchOutput"]

PUBLISH_TIMEOUT = timedelta(seconds=10)
"""Start-to-close timeout of one ``publish_batch_progress`` attempt."""
PUBLISH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
"""Progress is advisory: a few tries, then the next change publishes again."""


@workflow.defn(name=BATCH_GRADING_WORKFLOW)
class BatchGradingWorkflow:
    """Fans out child gradings with bounded concurrency and aggregates their progress."""

    def __init__(self) -> None:
        self._total = 0
        self._running = 0
        self._max_running = 0
        self._statuses: dict[str, str] = {}
        self._updated_at = ""
        self._batch_id = ""
        self._regrade = False
        self._finished_children = 0
        """Children finished so far (the publisher compares it with what it last published)."""
        self._all_done = False
        self._published = -1
        """``_finished_children`` when progress was last published (-1: never)."""

    def _touch(self) -> None:
        self._updated_at = workflow.now().isoformat()

    @workflow.run
    async def run(self, inp: BatchInput) -> BatchOutput:
        """Start every child, never more than ``max_concurrent`` at once, and wait for all."""
        if inp.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._total = len(inp.submissions)
        self._batch_id = inp.batch_id
        self._regrade = inp.regrade
        self._touch()
        publisher = (asyncio.create_task(self._publish_progress(inp))
                     if inp.progress_events and inp.submissions else None)
        tasks: list[asyncio.Task[None]] = []
        for sub in inp.submissions:
            await workflow.wait_condition(lambda: self._running < inp.max_concurrent)
            self._running += 1
            self._max_running = max(self._max_running, self._running)
            self._touch()
            tasks.append(asyncio.create_task(self._grade(sub)))
        await asyncio.gather(*tasks)
        self._all_done = True
        if publisher is not None:
            await publisher  # the last message says 100 %
        self._touch()
        return BatchOutput(statuses=dict(self._statuses), max_running=self._max_running)

    async def _grade(self, sub: GradingInput) -> None:
        try:
            # Like a single grading (infra.temporal.starter): tenant, trace and submission in memo and
            # search attributes, so a child is found and traced as if the API had started it.
            memo = {"trace_id": sub.trace_id, "tenant_id": sub.tenant_id}
            if self._batch_id:
                memo["batch_id"] = self._batch_id
            attributes = grading_search_attributes(sub)  # exam, student and status too (workflows.visibility)
            result: GradingOutput = await workflow.execute_child_workflow(
                GradingWorkflow.run, sub, id=grading_workflow_id(sub.submission_id),
                task_queue=workflow.info().task_queue, memo=memo, search_attributes=attributes,
                # A finished grading is re-run only by a regrade batch (a running one is never joined:
                # the child start fails, "already_started"), as starter.start_grading(restart=...).
                id_reuse_policy=(WorkflowIDReusePolicy.ALLOW_DUPLICATE if self._regrade
                                 else WorkflowIDReusePolicy.REJECT_DUPLICATE),
                static_summary=grading_summary(sub), static_details=grading_details(sub),
            )
            self._statuses[sub.submission_id] = result.status
        except WorkflowAlreadyStartedError:
            self._statuses[sub.submission_id] = "already_started"
        except ChildWorkflowError:
            self._statuses[sub.submission_id] = "failed"
        finally:
            self._running -= 1
            self._finished_children += 1
            self._touch()

    async def _publish_progress(self, inp: BatchInput) -> None:
        """Publish the progress now, then after every change, until every child is done."""
        first = inp.submissions[0]
        while True:
            await workflow.wait_condition(lambda: self._finished_children != self._published or self._all_done)
            if self._finished_children == self._published:  # every child done, and that was published
                return
            self._published = self._finished_children
            counts: dict[str, int] = {}
            for status in self._statuses.values():
                counts[status] = counts.get(status, 0) + 1
            progress = BatchProgressInput(
                tenant_id=first.tenant_id, exam_id=first.exam_id, batch_id=self._batch_id, total=self._total,
                done=len(self._statuses), running=self._running, counts=counts,
                kind="regrade" if self._regrade else "grade")
            try:
                await workflow.execute_activity_method(BatchActivities.publish_batch_progress, progress,
                                                       start_to_close_timeout=PUBLISH_TIMEOUT,
                                                       retry_policy=PUBLISH_RETRY)
            except ActivityError as err:
                workflow.logger.warning("batch progress not published: %s", err)

    @workflow.query(name=QUERY_PROGRESS)
    def get_progress(self) -> ProgressView:
        """Aggregate progress: children done / total, running now and the most ever running."""
        done = len(self._statuses)
        counts: dict[str, Any] = {}
        for status in self._statuses.values():
            counts[status] = counts.get(status, 0) + 1
        percentage = 100.0 * done / self._total if self._total else 100.0
        stage = "completed" if self._total and done == self._total else "grading"
        details = {"total": self._total, "done": done, "running": self._running,
                   "max_running": self._max_running, "pending": self._total - done - self._running,
                   "by_status": counts}
        return ProgressView(stage, percentage, details, self._updated_at)
