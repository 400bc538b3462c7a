"""Workflow of the LangGraph-plugin peer: run the registered grading graph (see :mod:`bench.peer_graph`).

Imports only stdlib and ``temporalio`` at top level: the sandbox re-imports this module per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from temporalio.langgraph import graph

PEER_GRAPH = "bench-grading"
"""Same value as :data:`bench.peer_graph.GRAPH_NAME` (not imported: it pulls the agent stack)."""


@dataclass
class PeerInput:
    """Input of :class:`PeerGradingWorkflow`: what the API would hand a plugin-based grader."""

    questions: list[dict[str, Any]] = field(default_factory=list)
    """The exam's questions (``Question.model_dump(mode="json")``)."""
    answers: dict[str, Any] = field(default_factory=dict)
    """question_id → answer."""


@dataclass
class PeerOutput:
    """Output of :class:`PeerGradingWorkflow`."""

    total: float
    """Sum of scores."""
    max_total: float
    """Sum of max points."""
    status: str
    """``graded`` or ``needs_review``."""
    graded: int
    """Questions graded."""


@workflow.defn(name="BenchPluginPeerWorkflow")
class PeerGradingWorkflow:
    """The grading graph under ``LangGraphPlugin``: graders as activities, the rest in the workflow."""

    @workflow.run
    async def run(self, inp: PeerInput) -> PeerOutput:
        """Invoke the graph with the inputs as state."""
        app = graph(PEER_GRAPH).compile()
        out = await app.ainvoke({"questions": inp.questions, "answers": inp.answers})
        return PeerOutput(total=float(out["total"]), max_total=float(out["max_total"]), status=str(out["status"]),
                          graded=len(out.get("grades") or {}))
