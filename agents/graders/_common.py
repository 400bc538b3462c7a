"""Helpers shared by the rubric graders."""

from __future__ import annotations

from agents.state import QuestionGrade


def clamp_score(score: float, max_points: float) -> float:
    """Return ``score`` limited to ``[0, max_points]``."""
    return min(max(score, 0.0), max_points)


def zero_grade(question_id: str, max_points: float, *, grader: str, feedback: str) -> QuestionGrade:
    """Build a certain zero grade, for a missing or malformed answer.

    Args:
        question_id: Question graded.
        max_points: Full marks of the question.
        grader: Name of the grader reporting it.
        feedback: Why nothing was awarded.

    """
    return QuestionGrade(
        question_id=question_id,
        score=0.0,
        max_points=max_points,
        confidence=1.0,
        feedback=feedback,
        grader=grader,
    )
