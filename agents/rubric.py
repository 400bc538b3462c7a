"""Exam question and rubric models, their canonical hash and answer validation.

The API validates exams with these models, so every error names the offending field.
Rule for text questions (short_answer / essay): at least one criterion, and the criteria
points must sum to ``max_points`` (within 1e-6); a rubric that cannot award full marks, or
awards more than full marks, is rejected rather than silently rescaled.
"""

from __future__ import annotations

import hashlib
import json
import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.db.values import FiniteFloat, Label, StoredText, text_problem

MAX_TEXT_ANSWER_CHARS = 20_000
"""Longest accepted text answer, in characters."""

POINTS_TOLERANCE = 1e-6
"""Allowed difference between the criteria points sum and ``max_points``."""

MAX_POINTS = 1_000_000
"""Largest ``max_points`` of a question (and points of a criterion): totals stay finite."""


class QuestionType(StrEnum):
    """Kinds of question, each graded by its own engine."""

    CHOICE = "choice"
    NUMERIC = "numeric"
    SHORT_ANSWER = "short_answer"
    ESSAY = "essay"


TEXT_TYPES = frozenset({QuestionType.SHORT_ANSWER, QuestionType.ESSAY})
"""Question types graded from free text (and by the LLM when one is configured)."""


class Criterion(BaseModel):
    """One scoring criterion of a text rubric."""

    model_config = ConfigDict(extra="forbid")

    id: Label = Field(min_length=1, max_length=64)
    """Stable identifier, reported in ``criteria_met`` / ``criteria_missed``."""
    description: StoredText
    """Human-readable statement of what the answer must contain."""
    points: FiniteFloat = Field(ge=0, le=MAX_POINTS)
    """Points awarded when the criterion is met."""
    keywords: list[StoredText] = Field(default_factory=list)
    """Words or phrases whose presence counts as a hit."""
    synonyms: dict[StoredText, list[StoredText]] = Field(default_factory=dict)
    """Alternatives per keyword (keyword -> alternatives); a synonym hit counts as exact."""
    min_matches: int = Field(default=1, ge=1, le=10_000)
    """Keyword hits needed for the criterion to be met."""

    @field_validator("keywords")
    @classmethod
    def _keywords_not_blank(cls, value: list[str]) -> list[str]:
        if any(not k.strip() for k in value):
            raise ValueError("keywords must not contain blank strings")
        return value

    @model_validator(mode="after")
    def _check_matches(self) -> Criterion:
        if self.keywords and self.min_matches > len(self.keywords):
            raise ValueError(
                f"min_matches ({self.min_matches}) exceeds the number of keywords ({len(self.keywords)})"
            )
        unknown = sorted(set(self.synonyms) - set(self.keywords))
        if unknown:
            raise ValueError(f"synonyms given for unknown keywords: {unknown}")
        return self


class Rubric(BaseModel):
    """Scoring rules of a question; which fields matter depends on the question type."""

    model_config = ConfigDict(extra="forbid")

    criteria: list[Criterion] = Field(default_factory=list)
    """Criteria of a text question."""
    options: list[StoredText] = Field(default_factory=list)
    """Options offered by a choice question."""
    correct: list[StoredText] = Field(default_factory=list)
    """Correct options; more than one makes the question multi-select."""
    partial_credit: bool = True
    """Multi-select only: award partial credit instead of all-or-nothing."""
    value: FiniteFloat | None = None
    """Expected value of a numeric question."""
    abs_tol: FiniteFloat = Field(default=0, ge=0)
    """Absolute tolerance of a numeric question."""
    rel_tol: FiniteFloat = Field(default=0, ge=0)
    """Relative tolerance of a numeric question (``math.isclose`` semantics)."""
    fuzzy_threshold: int = Field(default=85, ge=0, le=100)
    """Minimum rapidfuzz similarity (0-100) for a fuzzy keyword hit."""


class Question(BaseModel):
    """One exam question with its rubric."""

    model_config = ConfigDict(extra="forbid")

    id: Label = Field(min_length=1, max_length=64)
    """Question identifier, unique within an exam."""
    type: QuestionType
    """Which grading engine applies."""
    prompt: StoredText
    """Question text shown to the student."""
    max_points: FiniteFloat = Field(gt=0, le=MAX_POINTS)
    """Full marks."""
    rubric: Rubric
    """Scoring rules."""

    @model_validator(mode="after")
    def _check_rubric(self) -> Question:
        r = self.rubric
        if self.type is QuestionType.CHOICE:
            if not r.options:
                raise ValueError("rubric.options: a choice question needs at least one option")
            if len(set(r.options)) != len(r.options):
                raise ValueError("rubric.options: options must be unique")
            if not r.correct:
                raise ValueError("rubric.correct: a choice question needs at least one correct option")
            unknown = [c for c in r.correct if c not in r.options]
            if unknown:
                raise ValueError(f"rubric.correct: {unknown} are not among rubric.options")
        elif self.type is QuestionType.NUMERIC:
            if r.value is None or not math.isfinite(r.value):
                raise ValueError("rubric.value: a numeric question needs a finite expected value")
        else:
            if not r.criteria:
                raise ValueError(f"rubric.criteria: type {self.type.value!r} needs at least one criterion")
            for i, c in enumerate(r.criteria):
                if not c.keywords:
                    raise ValueError(
                        f"rubric.criteria[{i}].keywords: criterion {c.id!r} needs at least one keyword"
                    )
            ids = [c.id for c in r.criteria]
            if len(set(ids)) != len(ids):
                raise ValueError("rubric.criteria: criterion ids must be unique")
            total = sum(c.points for c in r.criteria)
            if abs(total - self.max_points) > POINTS_TOLERANCE:
                raise ValueError(
                    f"rubric.criteria: points sum to {total:g} but max_points is {self.max_points:g}"
                )
        return self

    @property
    def is_multi_select(self) -> bool:
        """Whether a choice question has more than one correct option."""
        return self.type is QuestionType.CHOICE and len(self.rubric.correct) > 1


def rubric_hash(question: Question) -> str:
    """Return the sha256 hex digest of the question's scoring-relevant parts.

    The digest covers type, max_points and the rubric, as canonical JSON with sorted keys, so
    two questions that grade identically share a hash whatever their id or prompt.
    """
    payload = {
        "type": question.type.value,
        "max_points": question.max_points,
        "rubric": question.rubric.model_dump(mode="json"),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_answer(question: Question, answer: Any) -> Any:
    """Check an answer's shape against its question and return it normalised.

    Args:
        question: The question answered.
        answer: The raw answer as submitted.

    Returns:
        A ``list[str]`` of picked options for choice questions, a ``float`` for numeric
        questions and a ``str`` for text questions.

    Raises:
        ValueError: The answer has the wrong type, picks unknown options, is not a number
            or is too long.

    """
    qid = question.id
    if question.type is QuestionType.CHOICE:
        picked = [answer] if isinstance(answer, str) else answer
        if not isinstance(picked, list) or not all(isinstance(p, str) for p in picked):
            raise ValueError(f"answer to {qid!r}: expected an option string or a list of option strings")
        unknown = [p for p in picked if p not in question.rubric.options]
        if unknown:
            raise ValueError(f"answer to {qid!r}: unknown options {unknown}")
        return list(dict.fromkeys(picked))
    if question.type is QuestionType.NUMERIC:
        if isinstance(answer, bool) or not isinstance(answer, int | float | str):
            raise ValueError(f"answer to {qid!r}: expected a number or a numeric string")
        try:
            number = float(answer.strip()) if isinstance(answer, str) else float(answer)
        except OverflowError:  # an integer too large for a float (hundreds of digits)
            raise ValueError(f"answer to {qid!r}: the number is too large") from None
        except ValueError:
            raise ValueError(f"answer to {qid!r}: {answer!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"answer to {qid!r}: {answer!r} is not a finite number")
        return number
    if not isinstance(answer, str):
        raise ValueError(f"answer to {qid!r}: expected text")
    if (problem := text_problem(answer)) is not None:
        raise ValueError(f"answer to {qid!r}: {problem}")
    if len(answer) > MAX_TEXT_ANSWER_CHARS:
        raise ValueError(f"answer to {qid!r}: longer than {MAX_TEXT_ANSWER_CHARS} characters")
    return answer
