"""LLM grading of short-answer and essay questions, with retries and rubric fallback.

The caller builds the chat model (``langchain.chat_models.init_chat_model(settings_string)``)
and passes it in. The model is asked for an :class:`LLMGrade` through
``with_structured_output``; models that do not support it (no tool calling) are prompted for
JSON and parsed with a ``PydanticOutputParser``. An answer that fails to parse, validates
badly or is out of range is retried (``max_attempts`` calls in total); after the last failure
the rubric engine grades instead, with ``grader="rubric-fallback"`` and confidence capped.
"""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.runnables import Runnable
from pydantic import BaseModel, Field, ValidationError

from agents.graders import grade_with_rubric
from agents.rubric import Question, validate_answer
from agents.state import QuestionGrade

logger = logging.getLogger(__name__)

LLM_GRADER = "llm"
"""``grader`` value of a grade produced by the model."""
FALLBACK_GRADER = "rubric-fallback"
"""``grader`` value of a rubric grade used after the model failed."""
DEFAULT_MAX_ATTEMPTS = 3
"""Model calls per answer: the first try and two retries."""
FALLBACK_CONFIDENCE_CAP = 0.3
"""Highest confidence a fallback grade may carry, so moderation flags it."""


class LLMGrade(BaseModel):
    """Structured grade the model must return."""

    score: float = Field(description="Points awarded, between 0 and the question's max points.")
    feedback: str = Field(description="Short explanation of the score for the student.")
    confidence: float = Field(ge=0, le=1, description="Confidence in the score, 0 to 1.")
    criteria_met: list[str] = Field(default_factory=list, description="Ids of the criteria satisfied.")


class InvalidModelOutputError(ValueError):
    """The model's answer could not be used as a grade."""


def _messages(question: Question, answer: str, *, json_instructions: str | None) -> list[BaseMessage]:
    criteria = "\n".join(
        f"- {c.id} ({c.points:g} points): {c.description}" for c in question.rubric.criteria
    )
    system = (
        "You are a strict, fair exam grader. Grade the student's answer against the rubric.\n"
        f"Question ({question.type.value}, max {question.max_points:g} points): {question.prompt}\n"
        f"Rubric criteria:\n{criteria}\n"
        "Award the points of each criterion the answer satisfies. Report the ids of the "
        "criteria met, a score between 0 and the max points, brief feedback and your "
        "confidence between 0 and 1."
    )
    if json_instructions:
        system += "\n" + json_instructions
    return [SystemMessage(content=system), HumanMessage(content=f"Student answer:\n{answer}")]


def _runnable(model: BaseChatModel) -> tuple[Runnable[Any, Any], str | None]:
    try:
        return model.with_structured_output(LLMGrade), None
    except NotImplementedError:
        parser = PydanticOutputParser(pydantic_object=LLMGrade)
        return model | parser, parser.get_format_instructions()


def check_llm_grade(question: Question, raw: Any) -> QuestionGrade:
    """Turn a model's output into a grade, or reject it.

    Args:
        question: The question graded.
        raw: What the structured-output runnable returned.

    Returns:
        The grade, with ``grader="llm"``.

    Raises:
        InvalidModelOutputError: Missing, malformed or out-of-range output, or unknown
            criterion ids.

    """
    try:
        parsed = raw if isinstance(raw, LLMGrade) else LLMGrade.model_validate(raw)
    except ValidationError as exc:
        raise InvalidModelOutputError(f"model output does not match LLMGrade: {exc}") from exc
    if not 0 <= parsed.score <= question.max_points:
        raise InvalidModelOutputError(f"score {parsed.score} outside [0, {question.max_points}]")
    ids = [c.id for c in question.rubric.criteria]
    unknown = [c for c in parsed.criteria_met if c not in ids]
    if unknown:
        raise InvalidModelOutputError(f"unknown criteria ids {unknown}")
    met = list(dict.fromkeys(parsed.criteria_met))
    return QuestionGrade(
        question_id=question.id,
        score=parsed.score,
        max_points=question.max_points,
        confidence=parsed.confidence,
        feedback=parsed.feedback,
        criteria_met=met,
        criteria_missed=[i for i in ids if i not in met],
        grader=LLM_GRADER,
    )


def fallback_grade(
    question: Question, answer: Any, *, confidence_cap: float = FALLBACK_CONFIDENCE_CAP
) -> QuestionGrade:
    """Grade with the rubric engine after the model failed, capping the confidence.

    Args:
        question: The question graded.
        answer: The raw answer.
        confidence_cap: Highest confidence the fallback grade may carry.

    """
    grade = grade_with_rubric(question, answer)
    return grade.model_copy(
        update={
            "confidence": min(grade.confidence, confidence_cap),
            "grader": FALLBACK_GRADER,
            "feedback": f"{grade.feedback} (Graded by rubric: the model's answer was unusable.)".strip(),
        }
    )


async def grade_with_llm(
    model: BaseChatModel,
    question: Question,
    answer: Any,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    confidence_cap: float = FALLBACK_CONFIDENCE_CAP,
) -> QuestionGrade:
    """Grade a text answer with the chat model, retrying, then falling back to the rubric.

    Missing or malformed answers are graded by the rubric engine directly (a certain zero):
    there is nothing for the model to judge.

    Args:
        model: Chat model built by the caller.
        question: A short-answer or essay question.
        answer: The raw answer.
        max_attempts: Model calls before falling back (at least 1).
        confidence_cap: Highest confidence of a fallback grade.

    Returns:
        The model's grade (``grader="llm"``) or a fallback grade (``grader="rubric-fallback"``).

    """
    try:
        text = validate_answer(question, answer) if answer is not None else None
    except ValueError:
        text = None
    if text is None or not text.strip():
        return grade_with_rubric(question, answer)
    runnable, json_instructions = _runnable(model)
    messages = _messages(question, text, json_instructions=json_instructions)
    for attempt in range(1, max(1, max_attempts) + 1):
        try:
            return check_llm_grade(question, await runnable.ainvoke(messages))
        except Exception as exc:  # noqa: BLE001 - any model/parse failure is retried, then falls back
            logger.warning(
                "LLM grade of %s failed (attempt %d/%d): %s", question.id, attempt, max_attempts, exc
            )
    return fallback_grade(question, answer, confidence_cap=confidence_cap)
