"""The cognitive activity: run the LangGraph grading agent durably (task queue ``cognitive``).

``run_grading_agent`` checkpoints on thread ``activity.info().workflow_run_id``. On a retry it
resumes from the latest loadable checkpoint (``ainvoke(None, ...)`` semantics, streamed), trying
first the thread an earlier run reported (``AgentInput.resume_thread_id``, e.g. the previous
workflow run's after an operator's retry); with no checkpoint it starts afresh on the same thread;
with a corrupt one it starts afresh on a new thread ``<run_id>:fresh-<attempt>`` and says why in its
output and logs. Each run has a checkpointer of its own on the shared pool, so a finished question
is in the checkpoint within milliseconds instead of queueing behind other gradings' writes.

Errors: a dependency outage (PostgreSQL, Redis, a checkpoint store that cannot be reached) is
raised as is, and Temporal retries it; a checkpoint store that refuses writes is
``CheckpointWriteError``; any other failure is a real grading error, ``GradingError``
(non-retryable here: the workflow spends its error budget on it and starts a new run). While the graph runs it
heartbeats after every node and from a ticker (at most every half heartbeat timeout, so a long
model call does not time the activity out), signals compact progress to its workflow and
publishes it on the tenant's Redis channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.types import AgentInput, AgentOutput, AgentProgress
from agents.checkpointer import (
    CheckpointWriteError,
    CorruptCheckpointError,
    GradeflowSaver,
    WritesHook,
    load_resume_point,
)
from agents.context import GradingContext
from agents.graph import GRADE_QUESTION, build_grading_graph
from agents.state import QuestionGrade
from infra.constants import SIGNAL_AGENT_PROGRESS
from infra.db.pools import PoolManager
from infra.events import live
from infra.events.failures import is_transient
from infra.observability.metrics import AGENT_ATTEMPT_RETRIES, GRADING_DURATION
from infra.stores import grading
from infra.stores.rubrics import RubricCache, questions_loader

logger = logging.getLogger(__name__)

FRESH_THREAD_SUFFIX = ":fresh-"
"""A corrupt checkpoint makes attempt ``n`` start afresh on thread ``<run_id>:fresh-<n>``."""


@dataclass(frozen=True)
class GradeCall:
    """Argument of the test hook awaited before each grader call is recorded."""

    submission_id: str
    question_id: str
    attempt: int
    thread_id: str


GradeHook = Callable[[GradeCall], Awaitable[None]]
"""Test hook: awaited after a question is graded, before its grader_calls row is written."""


@dataclass(frozen=True)
class StartPoint:
    """Where an attempt starts: thread, resume or not, and why."""

    thread_id: str
    resume: bool
    reason: str


class _FirstFailure:
    """The first checkpoint write of a run that failed on every try, and a race against it.

    LangGraph raises a failed write only when the whole step ends, after the step's other tasks: with
    slow graders that was a minute of grading nothing could save (seen in ``make chaos``,
    postgres_restart). :meth:`race` stops the run as soon as a write fails.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._failed: asyncio.Future[CheckpointWriteError] = self._loop.create_future()

    def set(self, error: CheckpointWriteError) -> None:
        """Record ``error`` (from any thread; the first one wins)."""
        def settle() -> None:
            if not self._failed.done():
                self._failed.set_result(error)
        self._loop.call_soon_threadsafe(settle)

    async def race(self, work: Awaitable[None]) -> None:
        """Await ``work``; if a write fails first, cancel it and raise that write's error."""
        task = asyncio.ensure_future(work)
        try:
            waiters: list[asyncio.Future[Any]] = [task, self._failed]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            task.result()  # the run ended first: its own outcome (done, or its error)
            return
        raise self._failed.result()


class _Tracker:
    """Latest progress of one run, shared by the stream loop and the heartbeat ticker."""

    def __init__(self, total: int, attempt: int, thread_id: str, feed: live.ProgressThrottle) -> None:
        self.graded: set[str] = set()
        self.live = feed
        self.last_signal_at = time.monotonic()  # the first periodic signal comes one interval after the start
        self.progress = AgentProgress(questions_done=0, questions_total=total, attempt=attempt,
                                      thread_id=thread_id)

    def details(self) -> dict[str, Any]:
        p = self.progress
        return {"node": p.current_node, "questions_done": p.questions_done, "checkpoint_id": p.checkpoint_id}

    def live_progress(self) -> dict[str, Any]:
        """The live ``grading.progress`` payload: the signal's fields plus ``graded_questions``.

        The ids graded so far go to the live feeds only (a feed draws a bar per question); the
        workflow signal stays compact (:class:`AgentProgress`).
        """
        return {**asdict(self.progress), "graded_questions": sorted(self.graded)}

    def add_grades(self, question_ids: Any) -> None:
        self.graded.update(question_ids or ())
        self.progress.questions_done = len(self.graded)


class AgentActivities:
    """Runs the grading graph for a workflow.

    Args:
        pools: The process's pool manager (answers and grader_calls in PostgreSQL, live Redis).
        saver: Checkpointer (``GradeflowSaver``) on its own autocommit pool.
        settings: :class:`infra.settings.Settings` (low-confidence threshold, the demo's grader delay
            ``demo_grader_delay_seconds``: seconds slept per graded question, before its grade is
            checkpointed, one question at a time).
        model: Chat model for text questions; ``None`` grades with the rubric engines.
        grade_hook: Test hook awaited per graded question (slow or crashing graders in tests).
        rubric_cache: The process's cache of questions and rubrics (``None``: PostgreSQL every run).

    """

    def __init__(self, pools: PoolManager, saver: GradeflowSaver, settings: Any,
                 model: BaseChatModel | None = None, *, grade_hook: GradeHook | None = None,
                 rubric_cache: RubricCache | None = None) -> None:
        self.pools = pools
        self.rubric_cache = rubric_cache
        self.saver = saver
        self.settings = settings
        self.model = model
        self.grade_hook = grade_hook
        self.grade_delay = float(getattr(settings, "demo_grader_delay_seconds", 0.0) or 0.0)

    async def choose_start(self, run_id: str, attempt: int, *, resume_thread_id: str = "",
                           saver: GradeflowSaver | None = None) -> StartPoint:
        """Decide the thread and whether to resume: the reported thread first, then newest fresh thread first."""
        if attempt <= 1 and not resume_thread_id:
            return StartPoint(run_id, False, "first attempt")
        candidates = [f"{run_id}{FRESH_THREAD_SUFFIX}{a}" for a in range(attempt - 1, 1, -1)] + [run_id]
        if resume_thread_id:
            candidates = [resume_thread_id, *(c for c in candidates if c != resume_thread_id)]
        for thread_id in candidates:
            try:
                point = await load_resume_point(saver or self.saver, thread_id)
            except CorruptCheckpointError as exc:
                fresh = f"{run_id}{FRESH_THREAD_SUFFIX}{attempt}"
                return StartPoint(fresh, False, f"corrupt checkpoint on {thread_id}: {exc.reason}")
            if point is not None:
                return StartPoint(thread_id, True, f"resumed from checkpoint {point.checkpoint_id} "
                                                   f"(step {point.step}, {point.pending_writes} pending writes)")
        return StartPoint(run_id, False, "no checkpoint")

    @activity.defn
    async def run_grading_agent(self, inp: AgentInput) -> AgentOutput:
        """Grade a submission with the checkpointed graph; resume on retries.

        Raises:
            ApplicationError: ``CheckpointWriteError`` (non-retryable) when checkpoint writes keep
                failing; ``GradingError`` (non-retryable) for any other failure that is not an
                outage; ``SubmissionNotFound`` (non-retryable). Outages are raised as they are.

        Metrics: the run's duration by outcome (``gradeflow_grading_duration_seconds``) and, on a
        retry, why the attempt before was lost (``gradeflow_agent_attempt_retries_total{cause}``).

        """
        started, outcome = time.monotonic(), "error"
        if activity.info().attempt > 1:
            AGENT_ATTEMPT_RETRIES.labels(await _lost_attempt_cause()).inc()
        try:
            out = await self._run(inp)
            outcome = out.status
            return out
        except Exception as exc:
            error = _classify(exc, {"trace_id": inp.trace_id, "submission_id": inp.submission_id,
                                    "tenant_id": inp.tenant_id})
            if error is exc:
                raise
            raise error from exc
        finally:
            GRADING_DURATION.labels(outcome).observe(time.monotonic() - started)

    async def _run(self, inp: AgentInput) -> AgentOutput:
        info = activity.info()
        run_id, attempt = info.workflow_run_id or info.activity_id, inp.attempt_base + info.attempt
        write_failed = _FirstFailure()
        saver = (self.saver.for_run(on_writes=self._grader_calls_recorder(inp, run_id, attempt),
                                    on_failure=write_failed.set)
                 if isinstance(self.saver, GradeflowSaver) else self.saver)
        try:
            async with self.pools.transaction(inp.tenant_id) as conn:
                inputs = await grading.load_grading_inputs(
                    conn, inp.submission_id, questions=questions_loader(self.rubric_cache, inp.tenant_id))
        except grading.SubmissionNotFoundError as exc:
            raise ApplicationError(str(exc), type="SubmissionNotFound", non_retryable=True) from exc
        threshold = inp.low_confidence_threshold
        if threshold is None:
            threshold = self.settings.low_confidence_threshold
        ctx = GradingContext(submission_id=inp.submission_id, tenant_id=inp.tenant_id, trace_id=inp.trace_id,
                             questions=inputs.questions, answers=inputs.answers,
                             low_confidence_threshold=threshold)
        start = await self.choose_start(run_id, attempt, resume_thread_id=inp.resume_thread_id, saver=saver)
        log_extra = {"trace_id": inp.trace_id, "submission_id": inp.submission_id, "tenant_id": inp.tenant_id}
        logger.info("agent attempt %d on thread %s: %s", attempt, start.thread_id, start.reason, extra=log_extra)

        # Not LangGraph's ``max_concurrency``: its semaphore also gates the checkpointer's
        # put_writes, so finished questions would stay unsaved until the whole step ends.
        # The demo's slow grader finishes one question at a time, so progress moves question by question.
        slots = (asyncio.Semaphore(inp.max_concurrency) if inp.max_concurrency
                 else asyncio.Semaphore(1) if self.grade_delay > 0 else None)
        graph = build_grading_graph(saver, model=self.model,
                                    on_grade=self._on_grade(inp, run_id, attempt, start.thread_id, slots))
        config: RunnableConfig = {"configurable": {"thread_id": start.thread_id}}
        exam_id = str(inputs.submission["exam_id"])
        feed = live.ProgressThrottle(self.pools.redis, tenant_id=inp.tenant_id, submission_id=inp.submission_id,
                                     exam_id=exam_id, interval=self.settings.live_progress_interval)
        tracker = _Tracker(len(inputs.questions), attempt, start.thread_id, feed)
        if start.resume:
            snapshot = await graph.aget_state(config)
            tracker.add_grades((snapshot.values or {}).get("grades"))
            tracker.progress.checkpoint_id = snapshot.config["configurable"].get("checkpoint_id", "")
        ticker = asyncio.create_task(self._tick(tracker, info.heartbeat_timeout))
        try:
            # A resumed attempt tells its workflow at once (the query shows the attempt and thread);
            # a fresh one only once it has run for an interval: most gradings finish first and
            # cost no signal at all (each is a workflow task and two history events).
            await self._report(inp, tracker, exam_id, force=start.resume)
            graph_input: Any = None if start.resume else {}
            stream = graph.astream(graph_input, config, context=ctx,
                                   stream_mode=["updates", "checkpoints"])
            await write_failed.race(self._follow(stream, inp, tracker, exam_id))
            state = (await graph.aget_state(config)).values
        finally:
            ticker.cancel()
            await tracker.live.close()
        tracker.progress.finished = True
        await self._report(inp, tracker, exam_id, signal=False)  # the activity's result tells the workflow the rest
        out = self._output(state, inputs.rubric_versions, start, attempt)
        out.checkpoint_id = tracker.progress.checkpoint_id
        return out

    async def _follow(self, stream: Any, inp: AgentInput, tracker: _Tracker, exam_id: str) -> None:
        """Consume the graph's stream: track grades and checkpoints, heartbeat, report progress."""
        async for item in stream:
            mode, chunk = cast(tuple[str, dict[str, Any]], item)
            if mode == "checkpoints":
                tracker.progress.checkpoint_id = chunk["config"]["configurable"]["checkpoint_id"]
                tracker.add_grades((chunk.get("values") or {}).get("grades"))
                activity.heartbeat(tracker.details())
                continue
            for node, update in chunk.items():
                if node.startswith("__"):
                    continue
                tracker.progress.current_node = node
                if node == GRADE_QUESTION and isinstance(update, dict):
                    tracker.add_grades(update.get("grades"))
            activity.heartbeat(tracker.details())
            await self._report(inp, tracker, exam_id)

    @staticmethod
    def _grader_calls_recorder(inp: AgentInput, run_id: str, attempt: int) -> WritesHook:
        """Record a grader_calls row per graded question in the transaction that checkpoints its grade.

        One transaction per finished question instead of two, and a call is never recorded later
        than its grade is saved (a kill between the two loses both: the question is graded again
        and recorded once, by the attempt that saved it).
        """

        async def record(conn: Any, writes: Sequence[tuple[str, Any]]) -> None:
            question_ids = [qid for channel, value in writes if channel == "grades" and isinstance(value, dict)
                            for qid in value]
            await grading.record_grader_calls_in(conn, tenant_id=inp.tenant_id, submission_id=inp.submission_id,
                                                 question_ids=question_ids, run_id=run_id, attempt=attempt)
        return record

    def _on_grade(self, inp: AgentInput, run_id: str, attempt: int, thread_id: str,
                  slots: asyncio.Semaphore | None) -> Callable[[str, QuestionGrade], Awaitable[None]]:
        async def record(question_id: str) -> None:
            # The grader_calls row itself is written with the grade's checkpoint write (see
            # _grader_calls_recorder); the test hook (a crashing grader) and the demo's slow grader.
            if self.grade_hook is not None:
                await self.grade_hook(GradeCall(inp.submission_id, question_id, attempt, thread_id))
            if self.grade_delay > 0:
                await asyncio.sleep(self.grade_delay)

        async def on_grade(question_id: str, grade: QuestionGrade) -> None:
            if slots is None:
                await record(question_id)
                return
            async with slots:
                await record(question_id)
        return on_grade

    async def _tick(self, tracker: _Tracker, heartbeat_timeout: Any) -> None:
        """Heartbeat every third of the heartbeat timeout (so gaps stay under half of it)."""
        seconds = heartbeat_timeout.total_seconds() if heartbeat_timeout else 10.0
        interval = max(0.05, seconds / 3)
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat(tracker.details())

    async def _report(self, inp: AgentInput, tracker: _Tracker, exam_id: str = "", *, force: bool = False,
                      signal: bool = True) -> None:
        """Publish progress on Redis and signal the workflow; failures are logged, never raised.

        Steps go to Redis for the live feeds (with the ids of the questions graded so far) at most
        once per ``live_progress_interval`` (the first, and the last of a run, always: a skipped
        step's questions ride on the next message); the workflow is signalled at most once per
        ``progress_signal_interval`` (each signal costs a workflow task and history events): the
        first one an interval after the start, or at once with ``force`` (a resumed attempt). The
        end is not signalled: the activity's result carries it.
        """
        progress = tracker.progress
        await tracker.live.update(tracker.live_progress(), flush=force or progress.finished)
        now = time.monotonic()
        interval = float(getattr(self.settings, "progress_signal_interval", 0.5))
        if not signal or (not force and now - tracker.last_signal_at < interval):
            return
        tracker.last_signal_at = now
        try:
            info = activity.info()
            handle = activity.client().get_workflow_handle(info.workflow_id or "", run_id=info.workflow_run_id)
            await handle.signal(SIGNAL_AGENT_PROGRESS, progress)
        except Exception as exc:  # noqa: BLE001 - progress is advisory
            logger.warning("progress signal failed: %r", exc)

    @staticmethod
    def _output(state: dict[str, Any], versions: dict[str, int], start: StartPoint, attempt: int) -> AgentOutput:
        flagged = list(state.get("flagged") or [])
        grades = [
            {**grade, "rubric_version": versions.get(qid, 1), "flagged": qid in flagged}
            for qid, grade in (state.get("grades") or {}).items()
        ]
        return AgentOutput(
            grades=grades, total=float(state.get("total", 0.0)), max_total=float(state.get("max_total", 0.0)),
            flagged=flagged, status=str(state.get("status", "graded")), resumed=start.resume,
            resume_reason=start.reason, thread_id=start.thread_id, attempt=attempt,
        )


CHECKPOINT_STORE_UNREACHABLE = "CheckpointStoreUnreachable"
"""Type of the retryable error of a run whose checkpoint writes failed because PostgreSQL was unreachable."""


def _classify(exc: Exception, log_extra: dict[str, Any]) -> Exception:
    """The error to raise for a failed run: the outage as is, or a non-retryable grading failure."""
    if isinstance(exc, ApplicationError):
        return exc
    if is_transient(exc):
        logger.warning("agent run interrupted by an outage (retried): %r", exc, extra=log_extra)
        if _find(exc, CheckpointWriteError) is not None:
            # Raised as is, Temporal would name it after its class, which the workflow lists as
            # non-retryable: a checkpoint store that was unreachable is an outage, retried like one.
            return ApplicationError(f"checkpoint store unreachable: {exc}", type=CHECKPOINT_STORE_UNREACHABLE)
        return exc
    write_error = _find(exc, CheckpointWriteError)
    if write_error is not None:
        logger.error("checkpoint writes failed: %s", write_error, extra=log_extra)
        return ApplicationError(str(write_error), type="CheckpointWriteError", non_retryable=True)
    logger.exception("grading failed", extra=log_extra)
    return ApplicationError(f"{type(exc).__name__}: {exc}", type="GradingError", non_retryable=True)


async def _lost_attempt_cause(timeout: float = 2.0) -> str:
    """Why this activity's previous attempt ended, from its workflow's pending-activity record.

    ``heartbeat_timeout`` (the worker died or stalled), ``start_to_close_timeout``, ``error`` (it
    raised, e.g. an outage) or ``unknown`` (Temporal did not say in time). Costs one describe call,
    made only by retried attempts.
    """
    from temporalio.api.enums.v1 import TimeoutType

    info = activity.info()
    try:
        handle = activity.client().get_workflow_handle(info.workflow_id or "", run_id=info.workflow_run_id)
        description = await asyncio.wait_for(handle.describe(), timeout)
    except Exception as exc:  # noqa: BLE001 - a metric label is not worth failing the attempt for
        logger.debug("previous attempt's failure unknown: %r", exc)
        return "unknown"
    for pending in description.raw_description.pending_activities:
        if pending.activity_id != info.activity_id or not pending.HasField("last_failure"):
            continue
        failure = pending.last_failure
        while not failure.HasField("timeout_failure_info") and failure.HasField("cause"):
            failure = failure.cause
        if failure.HasField("timeout_failure_info"):
            kind = failure.timeout_failure_info.timeout_type
            return {TimeoutType.TIMEOUT_TYPE_HEARTBEAT: "heartbeat_timeout",
                    TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE: "start_to_close_timeout"}.get(kind, "unknown")
        return "error"
    return "unknown"


def _find(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """Return the first exception of ``kind`` in ``exc``'s cause/context chain."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
