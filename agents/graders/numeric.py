"""Numeric grader: expected value with absolute/relative tolerance."""

from __future__ import annotations

import math
from typing import Any

from agents.graders._common import zero_grade
from agents.rubric import Question, validate_answer
from agents.state import QuestionGrade

GRADER_NAME = "numeric"


def grade_numeric(question: Question, answer: Any) -> QuestionGrade:
    """Grade a numeric answer, all-or-nothing, with ``math.isclose`` semantics.

    The answer is right when ``math.isclose(answer, value, rel_tol=..., abs_tol=...)``.
    A non-numeric answer scores 0 with feedback. Confidence is always 1.0.

    Args:
        question: A numeric question.
        answer: A number or numeric string; ``None`` if unanswered.

    """
    if answer is None:
        return zero_grade(question.id, question.max_points, grader=GRADER_NAME, feedback="No answer given.")
    try:
        number = validate_answer(question, answer)
    except ValueError as exc:
        return zero_grade(question.id, question.max_points, grader=GRADER_NAME, feedback=str(exc))
    r = question.rubric
    expected = float(r.value) if r.value is not None else math.nan
    ok = math.isclose(number, expected, rel_tol=r.rel_tol, abs_tol=r.abs_tol)
    feedback = (
        f"{number:g} is correct."
        if ok
        else f"{number:g} is outside the accepted range around the expected value."
    )
    return QuestionGrade(
        question_id=question.id,
        score=question.max_points if ok else 0.0,
        max_points=question.max_points,
        confidence=1.0,
        feedback=feedback,
        criteria_met=["value"] if ok else [],
        criteria_missed=[] if ok else ["value"],
        grader=GRADER_NAME,
    )
