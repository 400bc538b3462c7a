"""Graph state and the per-question grade record.

The state holds only what the graph produces; the immutable inputs (questions, answers)
travel in the runtime context (:class:`agents.context.GradingContext`).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

GradeStatus = Literal["graded", "needs_review"]
"""Outcome of moderation."""


class QuestionGrade(BaseModel):
    """Grade of one answer, as produced by a grader."""

    model_config = ConfigDict(extra="forbid")

    question_id: str
    """Question graded."""
    score: float = Field(ge=0)
    """Points awarded, within ``[0, max_points]``."""
    max_points: float = Field(gt=0)
    """Full marks of the question."""
    confidence: float = Field(ge=0, le=1)
    """How sure the grader is of the score (0..1)."""
    feedback: str = ""
    """Explanation for the student / reviewer."""
    criteria_met: list[str] = Field(default_factory=list)
    """Criterion ids (or option names) satisfied."""
    criteria_missed: list[str] = Field(default_factory=list)
    """Criterion ids (or option names) not satisfied."""
    grader: str
    """Engine that produced the grade, e.g. ``choice``, ``llm``, ``rubric-fallback``."""

    @model_validator(mode="after")
    def _score_within_max(self) -> QuestionGrade:
        if self.score > self.max_points + 1e-9:
            raise ValueError(f"score {self.score:g} exceeds max_points {self.max_points:g}")
        return self


def merge_reducer(left: dict[str, dict] | None, right: dict[str, dict] | None) -> dict[str, dict]:
    """Merge two ``question_id -> grade`` maps; the right side wins on conflicts.

    Args:
        left: Current channel value.
        right: Update written by a node.

    Returns:
        A new dict; neither argument is mutated.

    """
    return {**(left or {}), **(right or {})}


class GradingState(TypedDict, total=False):
    """Values the grading graph produces."""

    grades: Annotated[dict[str, dict], merge_reducer]
    """question_id -> :class:`QuestionGrade` as a dict."""
    total: float
    """Sum of scores."""
    max_total: float
    """Sum of max points."""
    flagged: list[str]
    """Question ids whose grade confidence is below the threshold."""
    status: GradeStatus
    """``needs_review`` when anything is flagged, else ``graded``."""
