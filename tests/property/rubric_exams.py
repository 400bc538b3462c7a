"""Generated exam bodies with one question of each rubric-bearing type (for rubric-hash properties)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

keywords = st.lists(st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12),
                    min_size=1, max_size=4, unique=True)


def _questions(points: int, words: list[str], correct: list[str], value: float) -> list[dict[str, Any]]:
    return [
        {"id": "c", "type": "choice", "prompt": "p", "max_points": points,
         "rubric": {"options": ["a", "b", "c"], "correct": correct}},
        {"id": "n", "type": "numeric", "prompt": "p", "max_points": points, "rubric": {"value": value}},
        {"id": "s", "type": "short_answer", "prompt": "p", "max_points": points,
         "rubric": {"criteria": [{"id": "k", "description": "d", "points": points, "keywords": words}]}},
    ]


three_type_questions = st.builds(
    _questions, points=st.integers(1, 20), words=keywords,
    correct=st.sampled_from([["a"], ["b", "c"], ["a", "b", "c"]]),
    value=st.floats(allow_nan=False, allow_infinity=False, width=32),
)
"""Questions of an exam: choice, numeric and short answer, with generated points, keywords and keys."""
