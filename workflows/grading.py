"""``GradingWorkflow``: load → grade (cognitive queue, checkpointed) → persist → review → done.

Deterministic code only: every I/O is an activity; time comes from ``workflow.now()``. The
``get_progress`` query shows the stage, a percentage and the agent's latest compact progress
(questions done, node, checkpoint id, attempt), fed by the agent's ``agent_progress`` signals.

Faults are normal: activities retry through an outage of PostgreSQL, Redis, Temporal or a worker for
``outage_retry_timeout_s`` (bounded by time, not by a handful of attempts), and a crashed cognitive
worker (heartbeat timeout) is retried without limit inside that time. Only real grading errors
(``GradingError`` from the agent) spend the ``agent_max_attempts`` budget; each new agent run resumes
from the checkpoint of the one before. A non-retryable failure marks the submission
``needs_intervention`` (error recorded) and fails the workflow with a non-retryable error; an
operator may then start a new run that resumes from the last checkpoint (``resume_thread_id``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.agent import AgentActivities
    from activities.grading import GradingActivities
    from activities.types import (
        AgentInput,
        AgentOutput,
        AgentProgress,
        PersistInput,
        StatusInput,
        SubmissionRef,
    )
    from infra.constants import (
        GRADING_WORKFLOW,
        QUERY_PROGRESS,
        SIGNAL_AGENT_PROGRESS,
        SIGNAL_EXTERNAL_EVENT,
        SIGNAL_REVIEW,
        UPDATE_REVIEW,
        SubmissionStatus,
    )
    from workflows.types import (
        ExternalEvent,
        GradingInput,
        GradingOutput,
        ProgressView,
        ReviewAck,
        ReviewInput,
    )
    from workflows.visibility import STATUS_KEY

__all__ = ["ExternalEvent", "GradingInput", "GradingOutput", "GradingWorkflow", "ProgressView", "ReviewAck",
           "ReviewInput"]

MAX_EXTERNAL_EVENTS = 20
"""External events kept in the workflow state (oldest dropped)."""
MAX_SEEN_EXTERNAL_IDS = 1000
"""External event ids remembered for deduplication (oldest forgotten)."""
DB_ACTIVITY_TIMEOUT = timedelta(seconds=30)
"""Start-to-close timeout of one attempt of a database activity."""
GRADING_ERROR = "GradingError"
"""Type of the agent's non-retryable error for a real grading failure (spends the error budget)."""
AGENT_NON_RETRYABLE = ["CheckpointWriteError", GRADING_ERROR, "SubmissionNotFound"]
PATCH_DB_LOCAL_ACTIVITIES = "db-local-activities"
"""Patch id: load and persist became local activities (older runs replay them as activities)."""
PATCH_STATUS_ATTRIBUTE = "status-search-attribute"
"""Patch id: the workflow upserts ``GradeflowStatus`` as the status changes (older runs replay without)."""
LOCAL_RETRY_THRESHOLD = timedelta(seconds=10)
"""Retry backoffs longer than this wait on a workflow timer rather than inside the workflow task."""
A = TypeVar("A")
R = TypeVar("R")


@workflow.defn(name=GRADING_WORKFLOW)
class GradingWorkflow:
    """Grades one submission; one workflow per submission, ever (id ``grade-<submission_id>``)."""

    def __init__(self) -> None:
        self._stage = "queued"
        self._percentage = 0.0
        self._details: dict[str, Any] = {"questions_done": 0, "questions_total": 0, "current_node": "",
                                         "checkpoint_id": "", "attempt": 0, "external_events": []}
        self._updated_at = ""
        self._review: ReviewInput | None = None
        self._seen_external: dict[str, None] = {}

    def _set(self, stage: str, percentage: float | None = None, **details: Any) -> None:
        self._stage = stage
        if percentage is not None:
            self._percentage = max(0.0, min(100.0, percentage))
        self._details.update(details)
        self._updated_at = workflow.now().isoformat()
        # Shown as "Current details" in the Temporal Web UI, beside the get_progress query.
        workflow.set_current_details(
            f"**{self._stage}** · {self._percentage:.0f}% · "
            f"{self._details.get('questions_done', 0)}/{self._details.get('questions_total', 0)} questions graded"
        )

    @workflow.run
    async def run(self, inp: GradingInput) -> GradingOutput:
        """Run the grading pipeline."""
        self._set("loading", 5)
        ref = SubmissionRef(inp.submission_id, inp.tenant_id, inp.trace_id)
        try:
            meta = await self._db_step(GradingActivities.load_grading_context, ref, inp)
            self._upsert_status(SubmissionStatus.GRADING)
            self._set("grading", 10, questions_total=meta.questions_total)
            agent = await self._grade(inp)
            self._set("persisting", 92, questions_done=len(agent.grades), resumed=agent.resumed,
                      resume_reason=agent.resume_reason, thread_id=agent.thread_id, attempt=agent.attempt,
                      checkpoint_id=agent.checkpoint_id or self._details.get("checkpoint_id", ""))
            persisted = await self._db_step(
                GradingActivities.persist_grading_result,
                PersistInput(inp.submission_id, inp.tenant_id, agent.grades, agent.total, agent.max_total,
                             agent.flagged, inp.trace_id, thread_id=agent.thread_id,
                             keep_reviewed=inp.keep_reviewed, expected_version=meta.version),
                inp)
        except ActivityError as err:
            raise await self._intervention(inp, err) from err
        total = agent.total
        if persisted.status == SubmissionStatus.NEEDS_REVIEW:
            self._upsert_status(SubmissionStatus.NEEDS_REVIEW)
            self._set("needs_review", 95, flagged=agent.flagged)
            status, total = await self._await_review(inp, total, persisted.version)
        else:
            status = SubmissionStatus.COMPLETED
        self._upsert_status(status)
        self._set(status, 100)
        return GradingOutput(status=status, total=total, max_total=agent.max_total, flagged=agent.flagged)

    @staticmethod
    def _upsert_status(status: str) -> None:
        """Keep the ``GradeflowStatus`` search attribute equal to the submission's status (deterministic)."""
        if workflow.patched(PATCH_STATUS_ATTRIBUTE):
            workflow.upsert_search_attributes([STATUS_KEY.value_set(str(status))])

    @staticmethod
    async def _db_step(activity: Callable[[Any, A], Awaitable[R]], arg: A, inp: GradingInput) -> R:
        """Run a short database activity of the main path as a local activity.

        Load and persist run on the orchestration worker beside this workflow, so as local
        activities they cost no activity task round trip and no workflow task of their own (a
        lone grading takes two workflow tasks instead of four). Same at-least-once contract, same
        time-bounded retries: beyond ``LOCAL_RETRY_THRESHOLD`` a retry waits on a durable timer
        instead of holding the workflow task. Runs started before this change replay as activities.
        """
        if not workflow.patched(PATCH_DB_LOCAL_ACTIVITIES):
            return await workflow.execute_activity_method(activity, arg, **GradingWorkflow._db_options(inp))
        return await workflow.execute_local_activity_method(
            activity, arg, local_retry_threshold=LOCAL_RETRY_THRESHOLD, **GradingWorkflow._db_options(inp))

    @staticmethod
    def _db_options(inp: GradingInput) -> dict[str, Any]:
        """Timeouts and retries of a database activity: retried through an outage, bounded by time."""
        return {"start_to_close_timeout": DB_ACTIVITY_TIMEOUT,
                "schedule_to_close_timeout": timedelta(seconds=inp.outage_retry_timeout_s),
                "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=min(0.5, inp.retry_max_interval_s)),
                                            backoff_coefficient=2,
                                            maximum_interval=timedelta(seconds=inp.retry_max_interval_s),
                                            maximum_attempts=0)}

    async def _grade(self, inp: GradingInput) -> AgentOutput:
        """Run the agent until it returns; only ``GradingError`` spends the ``agent_max_attempts`` budget.

        Inside one agent run Temporal retries crashes (heartbeat timeouts) and outages without limit
        until ``outage_retry_timeout_s``; each attempt resumes from the latest checkpoint. A grading
        error ends the run; the next run continues the attempt numbering and resumes from the
        thread the last one reported.
        """
        errors = 0
        while True:
            base = int(self._details.get("attempt") or 0)
            resume = str(self._details.get("thread_id") or inp.resume_thread_id)
            try:
                return await workflow.execute_activity_method(
                    AgentActivities.run_grading_agent,
                    AgentInput(inp.submission_id, inp.tenant_id, inp.trace_id,
                               low_confidence_threshold=inp.low_confidence_threshold,
                               max_concurrency=inp.agent_max_concurrency, attempt_base=base,
                               resume_thread_id=resume),
                    task_queue=inp.cognitive_queue,
                    start_to_close_timeout=timedelta(seconds=inp.agent_timeout_s),
                    heartbeat_timeout=timedelta(seconds=inp.heartbeat_timeout_s),
                    schedule_to_close_timeout=timedelta(seconds=inp.outage_retry_timeout_s + inp.agent_timeout_s),
                    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=min(1.0, inp.retry_max_interval_s)),
                                             backoff_coefficient=2,
                                             maximum_interval=timedelta(seconds=inp.retry_max_interval_s),
                                             maximum_attempts=0, non_retryable_error_types=AGENT_NON_RETRYABLE))
            except ActivityError as err:
                cause = err.cause
                if not (isinstance(cause, ApplicationError) and cause.type == GRADING_ERROR):
                    raise
                errors += 1
                if errors >= inp.agent_max_attempts:
                    raise
                self._set("grading", grading_errors=errors, last_error=cause.message)
                await workflow.sleep(timedelta(seconds=min(inp.retry_max_interval_s, 2.0 ** (errors - 1))))
                self._details["attempt"] = max(int(self._details.get("attempt") or 0), base + 1)

    async def _await_review(self, inp: GradingInput, total: float, version: int = 0) -> tuple[str, float]:
        try:
            await workflow.wait_condition(lambda: self._review is not None,
                                          timeout=timedelta(seconds=inp.review_deadline_s))
        except TimeoutError:
            self._set("review_expired", details_note="review deadline passed; left in needs_review")
            return SubmissionStatus.NEEDS_REVIEW, total
        review = self._review
        assert review is not None
        target = SubmissionStatus.COMPLETED if review.approve else SubmissionStatus.FAILED
        self._set("applying_review", 97, reviewer=review.reviewer)
        out = await workflow.execute_activity_method(
            GradingActivities.set_status,
            StatusInput(inp.submission_id, inp.tenant_id, target, actor_id=review.reviewer,
                        overrides=review.overrides, feedback=review.feedback,
                        error=None if review.approve else f"rejected by reviewer {review.reviewer}",
                        trace_id=inp.trace_id, expected_version=version),
            **self._db_options(inp))
        return out.status, out.total if out.total is not None else total

    async def _intervention(self, inp: GradingInput, err: ActivityError) -> ApplicationError:
        """Mark the submission ``needs_intervention`` and return the error that fails the run."""
        cause = err.cause
        kind = cause.type if isinstance(cause, ApplicationError) and cause.type else type(cause).__name__
        message = f"{kind}: {cause.message if isinstance(cause, ApplicationError) else cause}"
        self._set("needs_intervention", error=message)
        self._upsert_status(SubmissionStatus.NEEDS_INTERVENTION)
        await workflow.execute_activity_method(
            GradingActivities.mark_needs_intervention,
            StatusInput(inp.submission_id, inp.tenant_id, SubmissionStatus.NEEDS_INTERVENTION,
                        error=message, trace_id=inp.trace_id, attempts=int(self._details.get("attempt") or 0)),
            **self._db_options(inp))
        return ApplicationError(f"grading needs intervention: {message}", type=kind, non_retryable=True)

    @workflow.query(name=QUERY_PROGRESS)
    def get_progress(self) -> ProgressView:
        """Current stage, percentage (0..100), details and time of the last change."""
        return ProgressView(self._stage, self._percentage, dict(self._details), self._updated_at)

    @workflow.signal(name=SIGNAL_AGENT_PROGRESS)
    def agent_progress(self, progress: AgentProgress) -> None:
        """Record the agent's compact progress (stale attempts ignored)."""
        if progress.attempt < int(self._details.get("attempt") or 0) or self._stage != "grading":
            return
        total = progress.questions_total or 1
        self._set("grading", 10 + 80 * min(progress.questions_done, total) / total,
                  questions_done=progress.questions_done, questions_total=progress.questions_total,
                  current_node=progress.current_node, checkpoint_id=progress.checkpoint_id,
                  attempt=progress.attempt, thread_id=progress.thread_id)

    @workflow.signal(name=SIGNAL_EXTERNAL_EVENT)
    def external_event(self, event: ExternalEvent) -> None:
        """Record an external event (kept in the state, visible in the query); repeated ids are ignored."""
        record: dict[str, Any] = {"event_type": event.event_type, "payload": event.payload,
                                  "at": workflow.now().isoformat()}
        if event.event_id:
            if event.event_id in self._seen_external:
                return
            self._seen_external[event.event_id] = None
            if len(self._seen_external) > MAX_SEEN_EXTERNAL_IDS:
                del self._seen_external[next(iter(self._seen_external))]
            record["event_id"] = event.event_id
        events = [*self._details.get("external_events", []), record]
        self._set(self._stage, external_events=events[-MAX_EXTERNAL_EVENTS:])

    @workflow.signal(name=SIGNAL_REVIEW)
    def review(self, review: ReviewInput) -> None:
        """Record a reviewer's decision (first one wins; ignored unless awaiting review)."""
        if self._stage == "needs_review" and self._review is None:
            self._review = review

    @workflow.update(name=UPDATE_REVIEW)
    def submit_review(self, review: ReviewInput) -> ReviewAck:
        """Accept a reviewer's decision; the validator refuses it unless awaiting review."""
        self._review = review
        return ReviewAck(accepted=True, stage=self._stage)

    @submit_review.validator
    def _validate_review(self, review: ReviewInput) -> None:
        """Refuse a decision unless awaiting review, and any decision that could not be recorded.

        The decision is stored by ``set_status`` (scores, feedback, the reviewer as actor); a value
        PostgreSQL refuses would fail that activity on every retry and leave the submission in
        ``needs_review`` for good, so it is refused here, before the update is accepted.
        """
        if self._stage != "needs_review" or self._review is not None:
            raise ValueError(f"not awaiting review (stage {self._stage})")

        def unstorable(text: object, limit: int, *, one_line: bool) -> bool:
            return (not isinstance(text, str) or len(text) > limit or "\x00" in text
                    or any(0xD800 <= ord(c) <= 0xDFFF for c in text) or (one_line and not text.isprintable()))

        if not review.reviewer or not review.reviewer.strip() or unstorable(review.reviewer, 256, one_line=True):
            raise ValueError("reviewer must be 1-256 printable characters")
        for qid, score in (review.overrides or {}).items():
            if unstorable(qid, 64, one_line=True):
                raise ValueError(f"override question id {qid!r} cannot be stored")
            if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score < float("inf"):
                raise ValueError(f"override score of {qid!r} must be a finite number >= 0")
        for qid, text in (review.feedback or {}).items():
            if unstorable(qid, 64, one_line=True) or unstorable(text, 10_000, one_line=False):
                raise ValueError(f"feedback of {qid!r} cannot be stored (text without NUL or lone surrogates)")
