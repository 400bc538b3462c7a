"""The grading graph: supervisor → per-question graders (``Send`` fan-out) → aggregate → moderate.

Inputs come from the runtime context (:class:`agents.context.GradingContext`), never from the
state. Invoke with ``await graph.ainvoke({}, config, context=ctx)``; with a checkpointer,
``config`` must carry ``{"configurable": {"thread_id": ...}}``.

Resume: each question is its own task; LangGraph stores a finished task's writes as pending
writes of the current checkpoint, so after a crash ``await graph.ainvoke(None, config,
context=ctx)`` re-runs only the unfinished questions. Starting again with ``{}`` on a thread
that already holds grades routes only the questions missing from ``state["grades"]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict, cast

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from agents.context import GradingContext
from agents.graders import grade_with_rubric
from agents.llm import grade_with_llm
from agents.rubric import TEXT_TYPES
from agents.state import GradingState, QuestionGrade
from infra.observability.metrics import QUESTION_GRADING_DURATION, QUESTIONS_GRADED
from infra.observability.tracing import traced_node

logger = logging.getLogger(__name__)

OnGrade = Callable[[str, QuestionGrade], Awaitable[None]]
"""Async callback awaited after each question is graded: ``(question_id, grade)``."""

SUPERVISOR = "supervisor"
GRADE_QUESTION = "grade_question"
AGGREGATE = "aggregate"
MODERATE = "moderate"


class GradeTask(TypedDict):
    """Payload of one ``Send`` to the ``grade_question`` node."""

    question_id: str


def _log_extra(runtime: Runtime[GradingContext], node: str) -> dict[str, Any]:
    ctx = runtime.context
    return {
        "trace_id": ctx.trace_id,
        "submission_id": ctx.submission_id,
        "tenant_id": ctx.tenant_id,
        "node": node,
    }


async def supervisor(state: GradingState, runtime: Runtime[GradingContext]) -> dict[str, Any]:
    """Check the context before fanning out; changes nothing in the state.

    Raises:
        ValueError: Question ids in the context are not unique.

    """
    ids = [q.id for q in runtime.context.questions]
    if len(set(ids)) != len(ids):
        raise ValueError("GradingContext.questions: question ids must be unique")
    done = len([i for i in ids if i in (state.get("grades") or {})])
    extra = _log_extra(runtime, SUPERVISOR)
    logger.info("grading %d questions (%d already graded)", len(ids), done, extra=extra)
    return {}


def route_questions(state: GradingState, runtime: Runtime[GradingContext]) -> list[Send] | str:
    """Send every question not yet graded to ``grade_question``; if none, go to ``aggregate``."""
    graded = state.get("grades") or {}
    sends = [
        Send(GRADE_QUESTION, GradeTask(question_id=q.id))
        for q in runtime.context.questions
        if q.id not in graded
    ]
    return sends or AGGREGATE


async def aggregate(state: GradingState, runtime: Runtime[GradingContext]) -> dict[str, Any]:
    """Total the scores of the context's questions."""
    grades = state.get("grades") or {}
    questions = runtime.context.questions
    total = sum(float(grades[q.id]["score"]) for q in questions if q.id in grades)
    max_total = sum(q.max_points for q in questions)
    return {"total": total, "max_total": max_total}


async def moderate(state: GradingState, runtime: Runtime[GradingContext]) -> dict[str, Any]:
    """Flag grades whose confidence is below the context's threshold."""
    threshold = runtime.context.low_confidence_threshold
    grades = state.get("grades") or {}
    flagged = [
        q.id
        for q in runtime.context.questions
        if q.id in grades and float(grades[q.id]["confidence"]) < threshold
    ]
    status = "needs_review" if flagged else "graded"
    logger.info("moderated: %s, flagged %s", status, flagged, extra=_log_extra(runtime, MODERATE))
    return {"flagged": flagged, "status": status}


def build_grading_graph(
    checkpointer: BaseCheckpointSaver | None = None,
    *,
    model: BaseChatModel | None = None,
    on_grade: OnGrade | None = None,
) -> CompiledStateGraph[GradingState, GradingContext, GradingState, GradingState]:
    """Build and compile the grading graph.

    Args:
        checkpointer: Saver for durable runs (``GradeflowSaver`` in production); ``None``
            runs without checkpoints.
        model: Chat model for short-answer and essay questions; ``None`` grades everything
            with the deterministic rubric engines.
        on_grade: Awaited after each question is graded (not re-run for questions whose
            grade was already checkpointed).

    Returns:
        The compiled graph, with ``context_schema=GradingContext``.

    """

    async def grade_question(task: GradeTask, runtime: Runtime[GradingContext]) -> dict[str, Any]:
        """Grade one question with the grader for its type (the model for text types if given)."""
        ctx = runtime.context
        question = ctx.question(task["question_id"])
        answer = ctx.answers.get(question.id)
        started = time.monotonic()
        if model is not None and question.type in TEXT_TYPES:
            grade = await grade_with_llm(model, question, answer)
        else:
            grade = grade_with_rubric(question, answer)
        QUESTIONS_GRADED.labels(grade.grader).inc()
        QUESTION_GRADING_DURATION.labels(grade.grader).observe(time.monotonic() - started)
        logger.info(
            "graded %s: %g/%g by %s (confidence %.2f)",
            question.id,
            grade.score,
            grade.max_points,
            grade.grader,
            grade.confidence,
            extra=_log_extra(runtime, GRADE_QUESTION),
        )
        if on_grade is not None:
            await on_grade(question.id, grade)
        return {"grades": {question.id: grade.model_dump(mode="json")}}

    builder = StateGraph(GradingState, context_schema=GradingContext)
    builder.add_node(SUPERVISOR, traced_node(SUPERVISOR, supervisor))
    # Typed on its Send payload, not the state; input_schema= would add GradeTask's keys as channels.
    builder.add_node(GRADE_QUESTION, cast(Any, traced_node(GRADE_QUESTION, grade_question)))
    builder.add_node(AGGREGATE, traced_node(AGGREGATE, aggregate))
    builder.add_node(MODERATE, traced_node(MODERATE, moderate))
    builder.add_edge(START, SUPERVISOR)
    builder.add_conditional_edges(SUPERVISOR, route_questions, [GRADE_QUESTION, AGGREGATE])
    builder.add_edge(GRADE_QUESTION, AGGREGATE)
    builder.add_edge(AGGREGATE, MODERATE)
    builder.add_edge(MODERATE, END)
    return builder.compile(checkpointer=checkpointer, name="grading")
