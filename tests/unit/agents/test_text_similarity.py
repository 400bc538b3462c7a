"""The fuzzy keyword search is the documented one: the best ``fuzz.ratio`` over every run of as many words."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz import fuzz

from agents.graders.text import _best_similarity

WORDS = st.lists(st.text(alphabet="abcdeéklmnoprstuz", min_size=1, max_size=9), max_size=14)


@given(phrase=st.lists(st.text(alphabet="abcdeéklmnoprstuz", min_size=1, max_size=9), max_size=3), words=WORDS)
def test_best_similarity_is_the_best_ratio_over_every_run_of_words(phrase: list[str], words: list[str]) -> None:
    n = len(phrase)
    runs = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)] if 0 < n <= len(words) else []
    expected = max((fuzz.ratio(" ".join(phrase), run) for run in runs), default=0.0)
    assert _best_similarity(phrase, words) == expected
