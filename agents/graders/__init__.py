"""Deterministic rubric graders and the registry that picks one by question type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.graders.choice import grade_choice
from agents.graders.numeric import grade_numeric
from agents.graders.text import grade_essay, grade_short_answer
from agents.rubric import Question, QuestionType
from agents.state import QuestionGrade

Grader = Callable[[Question, Any], QuestionGrade]
"""A pure function grading one answer against its question's rubric."""

GRADERS: dict[QuestionType, Grader] = {
    QuestionType.CHOICE: grade_choice,
    QuestionType.NUMERIC: grade_numeric,
    QuestionType.SHORT_ANSWER: grade_short_answer,
    QuestionType.ESSAY: grade_essay,
}
"""Rubric grader per question type."""


def grade_with_rubric(question: Question, answer: Any) -> QuestionGrade:
    """Grade one answer with the rubric engine for its question type."""
    return GRADERS[question.type](question, answer)


__all__ = [
    "GRADERS",
    "Grader",
    "grade_choice",
    "grade_essay",
    "grade_numeric",
    "grade_short_answer",
    "grade_with_rubric",
]
