"""The grading graph as a lean port to Temporal's LangGraph plugin (a bench reference, not product code).

Same shape and grading code as :mod:`agents.graph` (supervisor → ``Send`` per question → grader →
aggregate → moderate), written the way the plugin wants it: the inputs are state channels
(``questions``, ``answers``) written by the workflow's input, each ``Send`` carries its question and
answer, and the node metadata says where each node runs — the grader in an activity (one per
question), everything else inline in the workflow. Questions travel as plain dicts (what crosses
the activity boundary through Temporal's JSON converter) and are validated on the activity side.

Imported by the peer worker only (outside the workflow sandbox); the workflow reaches the graph
through ``temporalio.langgraph.graph(GRAPH_NAME)``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from agents.graders import grade_with_rubric
from agents.rubric import Question
from agents.state import merge_reducer

GRAPH_NAME = "bench-grading"
"""Name the graph is registered under with the plugin."""
LOW_CONFIDENCE_THRESHOLD = 0.6
"""Same default as :class:`agents.context.GradingContext`."""
GRADER_ACTIVITY = {"execute_in": "activity", "start_to_close_timeout": timedelta(seconds=60)}
"""Node metadata of the grader: one activity per question."""
IN_WORKFLOW = {"execute_in": "workflow"}
"""Node metadata of the supervisor, aggregator and moderator: inline in the workflow."""


class PeerState(TypedDict, total=False):
    """Graph state of the port: inputs are channels, as the plugin's workflow passes them in."""

    questions: list[dict[str, Any]]
    answers: dict[str, Any]
    grades: Annotated[dict[str, dict], merge_reducer]
    total: float
    max_total: float
    flagged: list[str]
    status: str


class PeerTask(TypedDict):
    """``Send`` payload: the question (as a dict) and its answer."""

    question: dict[str, Any]
    answer: Any


async def supervisor(state: PeerState) -> dict[str, Any]:
    """Check the question ids are unique (as :func:`agents.graph.supervisor` does)."""
    ids = [q["id"] for q in state.get("questions") or []]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids must be unique")
    return {}


async def route(state: PeerState) -> list[Send] | str:
    """One ``Send`` per question not graded yet, else straight to ``aggregate``.

    Async: a sync router would run in a thread pool, which a workflow has none of.
    """
    graded = state.get("grades") or {}
    answers = state.get("answers") or {}
    sends = [Send("grade_question", PeerTask(question=q, answer=answers.get(q["id"])))
             for q in state.get("questions") or [] if q["id"] not in graded]
    return sends or "aggregate"


async def grade_question(task: PeerTask) -> dict[str, Any]:
    """Grade one question with the rubric engine (the activity)."""
    question = Question.model_validate(task["question"])
    grade = grade_with_rubric(question, task["answer"])
    return {"grades": {question.id: grade.model_dump(mode="json")}}


async def aggregate(state: PeerState) -> dict[str, Any]:
    """Total the scores (as :func:`agents.graph.aggregate`)."""
    grades = state.get("grades") or {}
    questions = state.get("questions") or []
    total = sum(float(grades[q["id"]]["score"]) for q in questions if q["id"] in grades)
    return {"total": total, "max_total": sum(float(q["max_points"]) for q in questions)}


async def moderate(state: PeerState) -> dict[str, Any]:
    """Flag low-confidence grades (as :func:`agents.graph.moderate`)."""
    grades = state.get("grades") or {}
    flagged = [q["id"] for q in state.get("questions") or []
               if q["id"] in grades and float(grades[q["id"]]["confidence"]) < LOW_CONFIDENCE_THRESHOLD]
    return {"flagged": flagged, "status": "needs_review" if flagged else "graded"}


def build_peer_graph() -> StateGraph[Any, Any, Any, Any]:
    """The uncompiled graph the plugin registers (it wraps the nodes; the workflow compiles it)."""
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(PeerState)
    builder.add_node("supervisor", supervisor, metadata=dict(IN_WORKFLOW))
    builder.add_node("grade_question", grade_question, metadata=dict(GRADER_ACTIVITY))  # type: ignore[arg-type]
    builder.add_node("aggregate", aggregate, metadata=dict(IN_WORKFLOW))
    builder.add_node("moderate", moderate, metadata=dict(IN_WORKFLOW))
    builder.add_edge(START, "supervisor")
    builder.add_conditional_edges("supervisor", route, ["grade_question", "aggregate"])
    builder.add_edge("grade_question", "aggregate")
    builder.add_edge("aggregate", "moderate")
    builder.add_edge("moderate", END)
    return builder
