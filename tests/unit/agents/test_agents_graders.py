import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.graders import GRADERS, grade_with_rubric
from agents.graders.text import grade_essay, grade_short_answer
from agents.rubric import QuestionType
from tests.unit.agents.factories import choice_q, numeric_q, text_q

OPTIONS = ["a", "b", "c", "d"]
FEW = settings(max_examples=20, deadline=None)


def test_registry_covers_every_type():
    assert set(GRADERS) == set(QuestionType)


# --- choice -----------------------------------------------------------------


def test_single_choice_all_or_nothing():
    q = choice_q(["b"])
    assert grade_with_rubric(q, "b").score == 2.0
    assert grade_with_rubric(q, "a").score == 0.0
    assert grade_with_rubric(q, ["a", "b"]).score == 0.0


def test_multi_select_partial_credit_formula():
    q = choice_q(["a", "b"], max_points=4)
    assert grade_with_rubric(q, ["a", "b"]).score == 4
    assert grade_with_rubric(q, ["a"]).score == 2
    assert grade_with_rubric(q, ["a", "c"]).score == 0
    assert grade_with_rubric(q, ["c", "d"]).score == 0  # negative clamps to 0
    g = grade_with_rubric(q, ["a", "c"])
    assert g.criteria_met == ["a"] and set(g.criteria_missed) == {"b", "c"}


def test_multi_select_without_partial_credit():
    q = choice_q(["a", "b"], partial=False)
    assert grade_with_rubric(q, ["a"]).score == 0
    assert grade_with_rubric(q, ["b", "a"]).score == 2


def test_choice_bad_or_missing_answer_scores_zero_with_feedback():
    q = choice_q(["a"])
    assert grade_with_rubric(q, None).feedback == "No answer given."
    g = grade_with_rubric(q, ["zz"])
    assert g.score == 0 and "unknown options" in g.feedback


@FEW
@given(correct=st.lists(st.sampled_from(OPTIONS), min_size=1, unique=True),
       picked=st.lists(st.sampled_from(OPTIONS), unique=True), partial=st.booleans())
def test_choice_score_in_bounds_and_exact_is_full(correct, picked, partial):
    q = choice_q(correct, partial=partial)
    g = grade_with_rubric(q, picked)
    assert 0 <= g.score <= q.max_points
    assert g.confidence == 1.0
    assert grade_with_rubric(q, list(reversed(correct))).score == q.max_points


# --- numeric ----------------------------------------------------------------


def test_numeric_tolerances():
    q = numeric_q(10.0, abs_tol=0.5)
    assert grade_with_rubric(q, 10.4).score == 3
    assert grade_with_rubric(q, "9.6").score == 3
    assert grade_with_rubric(q, 10.6).score == 0
    r = numeric_q(100.0, rel_tol=0.01)
    assert grade_with_rubric(r, 100.9).score == 3
    assert grade_with_rubric(r, 102).score == 0


def test_numeric_non_numeric_is_zero_with_feedback():
    g = grade_with_rubric(numeric_q(1.0), "twelve")
    assert g.score == 0 and "not a number" in g.feedback and g.confidence == 1.0


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@FEW
@given(value=finite, tol=st.floats(min_value=0.001, max_value=100), frac=st.floats(0, 0.99))
def test_numeric_within_tolerance_full_marks(value, tol, frac):
    q = numeric_q(value, abs_tol=tol)
    assert grade_with_rubric(q, value + tol * frac).score == q.max_points
    assert grade_with_rubric(q, value - tol * frac).score == q.max_points


@FEW
@given(value=finite, tol=st.floats(min_value=0.001, max_value=100), extra=st.floats(1.01, 100))
def test_numeric_outside_tolerance_zero(value, tol, extra):
    q = numeric_q(value, abs_tol=tol)
    answer = value + tol * extra
    if not math.isclose(answer, value, abs_tol=tol):
        assert grade_with_rubric(q, answer).score == 0


@FEW
@given(answer=st.one_of(finite, st.text(max_size=20), st.none()))
def test_numeric_score_in_bounds(answer):
    g = grade_with_rubric(numeric_q(1.5, abs_tol=0.1), answer)
    assert g.score in (0.0, 3.0)


# --- text ---------------------------------------------------------------------


FULL = "Photosynthesis uses sunlight, water and carbon dioxide to make glucose."


@pytest.mark.parametrize("qtype", ["short_answer", "essay"])
def test_text_all_keywords_full_marks_and_high_confidence(qtype):
    g = grade_with_rubric(text_q(qtype), FULL + " " + " ".join(["filler"] * 30))
    assert g.score == 4.0
    assert g.criteria_met == ["process", "inputs", "output"] and g.criteria_missed == []
    assert g.confidence == 1.0
    assert "Met:" in g.feedback


def test_text_synonyms_count_as_exact():
    g = grade_short_answer(text_q(), "Chlorophyll turns light energy and CO2 into sugar.")
    assert g.score == 4.0 and g.confidence == 1.0


def test_text_fuzzy_match_scores_with_lower_confidence():
    g = grade_short_answer(text_q(), "Photosynthesys makes sugar from sunlight and water.")
    assert "process" in g.criteria_met
    assert g.score == 4.0
    assert 0.4 <= g.confidence < 1.0


def test_text_missed_criteria_named_in_feedback():
    g = grade_short_answer(text_q(), "Photosynthesis happens in leaves.")
    assert g.score == 2.0
    assert g.criteria_missed == ["inputs", "output"]
    assert "Missed: inputs" in g.feedback


def test_text_one_hit_short_is_borderline():
    g = grade_short_answer(text_q(), "Photosynthesis needs water. It makes glucose.")
    assert "inputs" in g.criteria_missed
    full = grade_short_answer(text_q(), "Photosynthesis makes glucose.")
    assert g.confidence < full.confidence


def test_short_essay_confidence_penalty():
    short = grade_essay(text_q("essay"), FULL)
    long = grade_essay(text_q("essay"), FULL + " " + " ".join(["filler"] * 30))
    assert short.score == long.score
    assert short.confidence < long.confidence
    assert "short" in short.feedback


def test_text_empty_and_invalid_answers():
    assert grade_short_answer(text_q(), "   ").score == 0
    assert grade_short_answer(text_q(), None).score == 0
    assert grade_short_answer(text_q(), 42).feedback.endswith("expected text")


@FEW
@given(text=st.text(max_size=300), qtype=st.sampled_from(["short_answer", "essay"]))
def test_text_score_and_confidence_in_bounds(text, qtype):
    g = grade_with_rubric(text_q(qtype), text)
    assert 0 <= g.score <= g.max_points
    assert 0 <= g.confidence <= 1
    assert set(g.criteria_met) | set(g.criteria_missed) in ({"process", "inputs", "output"}, set())


@FEW
@given(prefix=st.text(alphabet="xyz ", max_size=50), suffix=st.text(alphabet="xyz ", max_size=50))
def test_text_with_all_keywords_full_marks(prefix, suffix):
    g = grade_short_answer(text_q(), f"{prefix} {FULL} {suffix}")
    assert g.score == 4.0
