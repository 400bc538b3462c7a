"""Runtime context of the grading graph: the immutable inputs of one grading run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.rubric import Question


@dataclass(frozen=True)
class GradingContext:
    """Inputs of a grading run, passed as ``context=`` to ``graph.ainvoke``.

    They are not checkpointed: a resumed run must be given the same context again.
    """

    submission_id: str
    """Submission being graded."""
    tenant_id: str
    """Tenant owning the submission."""
    trace_id: str
    """Trace id propagated from the API request."""
    questions: list[Question] = field(default_factory=list)
    """Questions of the exam, in order."""
    answers: dict[str, Any] = field(default_factory=dict)
    """question_id -> raw answer; a missing answer grades as 0."""
    low_confidence_threshold: float = 0.6
    """Grades with a lower confidence are flagged for review."""

    def question(self, question_id: str) -> Question:
        """Return the question with this id.

        Raises:
            KeyError: No such question.

        """
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)
