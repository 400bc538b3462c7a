"""Short-answer and essay graders: criteria matched by keywords, synonyms and fuzzy matching.

For each criterion, every keyword counts at most one hit:

* **exact** — the keyword or one of its synonyms occurs as whole words (case-insensitive);
* **fuzzy** — otherwise, the best ``rapidfuzz.fuzz.ratio`` between the keyword (or a synonym)
  and any run of the answer's words of the same length is ``>= fuzzy_threshold``.

A criterion is met when its hits reach ``min_matches``; the score is the sum of the met
criteria's points, capped at ``max_points``.

Confidence (documented formula). Each criterion gets a confidence:

* met with enough exact hits: ``1.0``;
* met only thanks to fuzzy hits: ``0.4 + 0.4 * (s - t) / (100 - t)`` where ``s`` is the weakest
  fuzzy similarity needed and ``t`` the threshold (so 0.4..0.8);
* missed but borderline (one hit short, or a keyword within 10 points below the threshold): ``0.5``;
* clearly missed: ``0.9``.

The question's confidence is the points-weighted mean of its criteria's confidences. Essays
additionally lose confidence when very short (under 30 words: ×0.8), as keyword spotting is
least reliable there; the score itself never depends on length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process

from agents.graders._common import clamp_score, zero_grade
from agents.rubric import Criterion, Question, validate_answer
from agents.state import QuestionGrade

BORDERLINE_MARGIN = 10
"""Fuzzy similarity points below the threshold still counted as a near miss."""
SHORT_ESSAY_WORDS = 30
"""Essays with fewer words get a confidence penalty."""
SHORT_ESSAY_FACTOR = 0.8
"""Confidence multiplier for short essays."""

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


@dataclass
class CriterionResult:
    """Outcome of matching one criterion against an answer."""

    criterion: Criterion
    """The criterion matched."""
    exact_hits: int = 0
    """Keywords found exactly (or through a synonym)."""
    fuzzy_sims: list[float] = field(default_factory=list)
    """Similarities of keywords found only fuzzily."""
    near_miss: bool = False
    """A keyword came within the borderline margin below the threshold."""

    @property
    def hits(self) -> int:
        """Total keyword hits."""
        return self.exact_hits + len(self.fuzzy_sims)

    @property
    def met(self) -> bool:
        """Whether the criterion is satisfied."""
        return self.hits >= self.criterion.min_matches

    def confidence(self, threshold: int) -> float:
        """Confidence in the met/missed verdict, per the module's formula."""
        need = self.criterion.min_matches
        if self.met:
            if self.exact_hits >= need:
                return 1.0
            used = sorted(self.fuzzy_sims, reverse=True)[: need - self.exact_hits]
            span = max(100 - threshold, 1)
            return 0.4 + 0.4 * max(0.0, min(1.0, (min(used) - threshold) / span))
        if self.near_miss or self.hits == need - 1 and self.hits > 0:
            return 0.5
        return 0.9


def _best_similarity(phrase_words: list[str], words: list[str]) -> float:
    """Best ``fuzz.ratio`` of the phrase against any run of as many words (rapidfuzz's loop, in C)."""
    n = len(phrase_words)
    if n == 0 or len(words) < n:
        return 0.0
    runs = words if n == 1 else [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    best = process.extractOne(" ".join(phrase_words), runs, scorer=fuzz.ratio, processor=None)
    return float(best[1]) if best is not None else 0.0


def _contains(phrase_words: list[str], words: list[str]) -> bool:
    n = len(phrase_words)
    return n > 0 and any(words[i : i + n] == phrase_words for i in range(len(words) - n + 1))


def match_criterion(criterion: Criterion, words: list[str], threshold: int) -> CriterionResult:
    """Count the keyword hits of one criterion in a tokenised answer.

    Args:
        criterion: Criterion to match.
        words: The answer's casefolded words.
        threshold: Fuzzy similarity threshold (0-100).

    """
    result = CriterionResult(criterion)
    for keyword in criterion.keywords:
        variants = [_words(v) for v in [keyword, *criterion.synonyms.get(keyword, [])]]
        if any(_contains(v, words) for v in variants):
            result.exact_hits += 1
            continue
        best = max(_best_similarity(v, words) for v in variants)
        if best >= threshold:
            result.fuzzy_sims.append(best)
        elif best >= threshold - BORDERLINE_MARGIN:
            result.near_miss = True
    return result


def _grade_text(question: Question, answer: Any, *, grader: str) -> tuple[QuestionGrade, int]:
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return zero_grade(question.id, question.max_points, grader=grader, feedback="No answer given."), 0
    try:
        text = validate_answer(question, answer)
    except ValueError as exc:
        return zero_grade(question.id, question.max_points, grader=grader, feedback=str(exc)), 0
    words = _words(text)
    threshold = question.rubric.fuzzy_threshold
    results = [match_criterion(c, words, threshold) for c in question.rubric.criteria]
    met = [r.criterion for r in results if r.met]
    missed = [r.criterion for r in results if not r.met]
    score = clamp_score(sum(c.points for c in met), question.max_points)
    weights = [r.criterion.points for r in results]
    confs = [r.confidence(threshold) for r in results]
    if sum(weights) > 0:
        confidence = sum(w * c for w, c in zip(weights, confs, strict=True)) / sum(weights)
    else:
        confidence = sum(confs) / len(confs)
    parts = []
    if met:
        parts.append("Met: " + "; ".join(f"{c.id} ({c.description})" for c in met) + ".")
    if missed:
        parts.append("Missed: " + "; ".join(f"{c.id} ({c.description})" for c in missed) + ".")
    grade = QuestionGrade(
        question_id=question.id,
        score=score,
        max_points=question.max_points,
        confidence=min(1.0, max(0.0, confidence)),
        feedback=" ".join(parts),
        criteria_met=[c.id for c in met],
        criteria_missed=[c.id for c in missed],
        grader=grader,
    )
    return grade, len(words)


def grade_short_answer(question: Question, answer: Any) -> QuestionGrade:
    """Grade a short answer against its criteria (see the module docstring).

    Args:
        question: A short-answer question.
        answer: The answer text; ``None`` if unanswered.

    """
    return _grade_text(question, answer, grader="short_answer")[0]


def grade_essay(question: Question, answer: Any) -> QuestionGrade:
    """Grade an essay like a short answer, with lower confidence for very short essays.

    Args:
        question: An essay question.
        answer: The essay text; ``None`` if unanswered.

    """
    grade, n_words = _grade_text(question, answer, grader="essay")
    if 0 < n_words < SHORT_ESSAY_WORDS:
        grade = grade.model_copy(
            update={
                "confidence": grade.confidence * SHORT_ESSAY_FACTOR,
                "feedback": f"{grade.feedback} The essay is short ({n_words} words).".strip(),
            }
        )
    return grade
