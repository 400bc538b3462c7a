"""Choice grader: single- and multi-select option matching."""

from __future__ import annotations

from typing import Any

from agents.graders._common import clamp_score, zero_grade
from agents.rubric import Question, validate_answer
from agents.state import QuestionGrade

GRADER_NAME = "choice"


def grade_choice(question: Question, answer: Any) -> QuestionGrade:
    """Grade a choice answer.

    Single-select (one correct option) is all-or-nothing. Multi-select with
    ``partial_credit`` scores ``max(0, (correct picked - wrong picked) / len(correct))``
    times ``max_points``; without it, only the exact set of correct options scores.
    Confidence is always 1.0: the match is exact.

    Args:
        question: A choice question.
        answer: An option string or a list of option strings; ``None`` if unanswered.

    """
    if answer is None:
        return zero_grade(question.id, question.max_points, grader=GRADER_NAME, feedback="No answer given.")
    try:
        picked = validate_answer(question, answer)
    except ValueError as exc:
        return zero_grade(question.id, question.max_points, grader=GRADER_NAME, feedback=str(exc))
    correct = list(dict.fromkeys(question.rubric.correct))
    right = [p for p in picked if p in correct]
    wrong = [p for p in picked if p not in correct]
    missed = [c for c in correct if c not in picked]
    exact = not wrong and not missed
    if exact:
        fraction = 1.0
    elif question.is_multi_select and question.rubric.partial_credit:
        fraction = max(0.0, (len(right) - len(wrong)) / len(correct))
    else:
        fraction = 0.0
    parts = ["All correct options chosen." if exact else f"Correct options chosen: {right or 'none'}."]
    if wrong:
        parts.append(f"Wrong options chosen: {wrong}.")
    if missed:
        parts.append(f"Correct options missed: {missed}.")
    return QuestionGrade(
        question_id=question.id,
        score=clamp_score(fraction * question.max_points, question.max_points),
        max_points=question.max_points,
        confidence=1.0,
        feedback=" ".join(parts),
        criteria_met=right,
        criteria_missed=missed + wrong,
        grader=GRADER_NAME,
    )
