import pytest
from pydantic import ValidationError

from agents.rubric import Question, QuestionType, rubric_hash, validate_answer
from tests.unit.agents.factories import choice_q, numeric_q, text_q


def _err(**kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        Question(**kwargs)
    return str(info.value)


BASE = {"id": "q", "prompt": "p", "max_points": 2}


def test_empty_rubric_rejected_naming_the_field():
    assert "rubric.criteria" in _err(**BASE, type="essay", rubric={})
    assert "rubric.criteria" in _err(**BASE, type="short_answer", rubric={})
    assert "rubric.options" in _err(**BASE, type="choice", rubric={})
    assert "rubric.value" in _err(**BASE, type="numeric", rubric={})


def test_choice_correct_must_be_subset_of_options():
    assert "rubric.correct" in _err(**BASE, type="choice", rubric={"options": ["a"], "correct": ["z"]})
    assert "rubric.correct" in _err(**BASE, type="choice", rubric={"options": ["a"], "correct": []})


def test_negative_points_and_bad_fields_rejected():
    msg = _err(**BASE, type="essay", rubric={"criteria": [
        {"id": "x", "description": "d", "points": -1, "keywords": ["k"]}]})
    assert "points" in msg
    assert "max_points" in _err(id="q", prompt="p", max_points=0, type="numeric", rubric={"value": 1})
    assert "fuzzy_threshold" in _err(**BASE, type="numeric", rubric={"value": 1, "fuzzy_threshold": 101})
    assert "id" in _err(**{**BASE, "id": ""}, type="numeric", rubric={"value": 1})


def test_criteria_points_must_sum_to_max_points():
    msg = _err(**BASE, type="essay", rubric={"criteria": [
        {"id": "x", "description": "d", "points": 1, "keywords": ["k"]}]})
    assert "sum to 1" in msg and "max_points is 2" in msg


def test_criterion_consistency():
    assert "min_matches" in _err(**BASE, type="essay", rubric={"criteria": [
        {"id": "x", "description": "d", "points": 2, "keywords": ["k"], "min_matches": 2}]})
    assert "synonyms" in _err(**BASE, type="essay", rubric={"criteria": [
        {"id": "x", "description": "d", "points": 2, "keywords": ["k"], "synonyms": {"zz": ["y"]}}]})
    assert "keywords" in _err(**BASE, type="essay", rubric={"criteria": [
        {"id": "x", "description": "d", "points": 2}]})


def test_valid_questions_parse():
    assert text_q().type is QuestionType.SHORT_ANSWER
    assert choice_q(["a", "b"]).is_multi_select
    assert not numeric_q(1.0).is_multi_select


def test_rubric_hash_is_stable_and_sensitive():
    a, b = numeric_q(1.0, qid="x"), numeric_q(1.0, qid="y")
    assert rubric_hash(a) == rubric_hash(b)  # id/prompt do not matter
    assert rubric_hash(a) != rubric_hash(numeric_q(1.5))
    assert rubric_hash(a) != rubric_hash(numeric_q(1.0, max_points=4))
    assert len(rubric_hash(a)) == 64


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        (choice_q(["a"]), "a", ["a"]),
        (choice_q(["a", "b"]), ["b", "a", "b"], ["b", "a"]),
        (numeric_q(1.0), "2.5", 2.5),
        (numeric_q(1.0), 3, 3.0),
        (text_q(), "hello", "hello"),
    ],
)
def test_validate_answer_accepts(question, answer, expected):
    assert validate_answer(question, answer) == expected


@pytest.mark.parametrize(
    ("question", "answer", "fragment"),
    [
        (choice_q(["a"]), 3, "option string"),
        (choice_q(["a"]), ["a", "zz"], "unknown options"),
        (numeric_q(1.0), "abc", "not a number"),
        (numeric_q(1.0), True, "number"),
        (numeric_q(1.0), "inf", "finite"),
        (text_q(), 12, "expected text"),
        (text_q(), "x" * 20_001, "20000"),
        (numeric_q(1.0), int("9" * 400), "too large"),
        (numeric_q(1.0), "9" * 400, "finite"),
        (text_q(), "plants\x00", "NUL"),
        (text_q(), "plants \udc00", "surrogate"),
    ],
)
def test_validate_answer_rejects(question, answer, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_answer(question, answer)


@pytest.mark.parametrize(("changes", "field"), [
    ({"max_points": float("inf")}, "max_points"),
    ({"max_points": float("nan")}, "max_points"),
    ({"max_points": 1e7}, "max_points"),
    ({"id": "q\x00"}, "id"),
    ({"id": "q\n"}, "id"),
    ({"prompt": "p\udc00"}, "prompt"),
    ({"rubric": {"value": float("inf")}}, "rubric.value"),
    ({"rubric": {"value": 1, "abs_tol": float("nan")}}, "rubric.abs_tol"),
    ({"rubric": {"value": 1, "rel_tol": float("-inf")}}, "rubric.rel_tol"),
])
def test_unstorable_text_and_non_finite_numbers_are_refused(changes, field):
    message = _err(**{**BASE, "type": "numeric", "rubric": {"value": 1}, **changes})
    assert field in message


def test_criteria_text_and_points_must_be_storable_and_finite():
    crit = {"id": "c", "description": "d", "points": 2, "keywords": ["k"]}
    for bad, field in [({"keywords": ["k\x00"]}, "keywords.0"), ({"description": "\ud800"}, "description"),
                       ({"points": float("inf")}, "points"), ({"id": "c\x1b"}, "id"),
                       ({"min_matches": 10**400}, "min_matches")]:
        message = _err(**BASE, type="essay", rubric={"criteria": [{**crit, **bad}]})
        assert field in message, (bad, message)
    assert "options.0" in _err(**BASE, type="choice", rubric={"options": ["a\x00"], "correct": ["a\x00"]})
