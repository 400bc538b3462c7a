"""The benchmark workload: one 20-question exam and deterministic, realistic answers.

Both benchmarks grade the same thing: 4 choice (one multi-select), 4 numeric, 6 short-answer
and 6 essay questions, answered with seeded pseudo-prose of about 52 KB in total (short answers
~1.8 KB, essays ~6.8 KB, as JSON). Some criteria are met exactly, some fuzzily (typos), some
missed, so every grader path does real work.
"""

from __future__ import annotations

import json
import random
from typing import Any

from agents.rubric import Question

N_QUESTIONS = 20
"""Questions per exam (and answers per submission)."""
SHORT_ANSWER_CHARS = 1_800
"""Target length of a short answer."""
ESSAY_CHARS = 6_800
"""Target length of an essay."""

_FILLER = (
    "the experiment shows that the rate depends on how the variables interact over time and the "
    "results were recorded carefully in the notebook before the analysis began so that each "
    "observation could be compared with the prediction made at the start of the lab session while "
    "the group discussed possible sources of error such as temperature drift calibration and timing"
).split()

_TOPICS: list[tuple[str, list[tuple[str, list[str], dict[str, list[str]]]]]] = [
    ("Explain how enzymes speed up reactions.", [
        ("activation", ["activation energy", "lower"], {"lower": ["reduce", "decrease"]}),
        ("site", ["active site", "substrate"], {}),
    ]),
    ("Describe the water cycle.", [
        ("evaporation", ["evaporation", "condensation"], {"condensation": ["cloud formation"]}),
        ("precipitation", ["precipitation", "runoff"], {"precipitation": ["rain", "snow"]}),
    ]),
    ("Why do seasons occur on Earth?", [
        ("tilt", ["axial tilt", "23.5 degrees"], {"axial tilt": ["tilted axis"]}),
        ("angle", ["sunlight angle", "daylight hours"], {}),
    ]),
    ("Explain supply and demand.", [
        ("price", ["equilibrium price", "shortage", "surplus"], {}),
        ("curve", ["demand curve", "supply curve"], {}),
    ]),
    ("How does natural selection work?", [
        ("variation", ["variation", "heritable"], {"heritable": ["inherited"]}),
        ("fitness", ["survival", "reproduction", "fitness"], {}),
    ]),
    ("Describe the causes of the First World War.", [
        ("alliances", ["alliances", "militarism"], {}),
        ("trigger", ["assassination", "franz ferdinand"], {}),
    ]),
]


def _prose(rng: random.Random, chars: int, keywords: list[str]) -> str:
    """Seeded filler prose of about ``chars`` characters with ``keywords`` sprinkled in."""
    words: list[str] = []
    size = 0
    pending = list(keywords)
    while size < chars:
        if pending and rng.random() < 0.03:
            word = pending.pop(0)
        else:
            word = rng.choice(_FILLER)
        words.append(word)
        size += len(word) + 1
    words.extend(pending)
    return " ".join(words).capitalize() + "."


def _typo(word: str) -> str:
    """Swap two middle letters: close enough for a fuzzy hit."""
    if len(word) < 5:
        return word
    i = len(word) // 2
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]


def exam_questions(count: int = N_QUESTIONS) -> list[Question]:
    """The questions of the benchmark exam: the 20 below (ids ``q01``..``q20``), cycled to ``count``.

    With ``count`` other than 20 the ids are ``q001``, ``q002``, ... and the types keep the 20's mix.
    """
    base = _base_questions()
    if count == N_QUESTIONS:
        return base
    return [base[i % N_QUESTIONS].model_copy(update={"id": f"q{i + 1:03d}"}) for i in range(count)]


def _base_questions() -> list[Question]:
    questions: list[Question] = []
    for i in range(4):
        options = ["alpha", "beta", "gamma", "delta"]
        correct = ["alpha", "gamma"] if i == 0 else [options[i]]
        questions.append(Question.model_validate({
            "id": f"q{len(questions) + 1:02d}", "type": "choice", "prompt": f"Choice question {i}",
            "max_points": 2, "rubric": {"options": options, "correct": correct},
        }))
    for i in range(4):
        questions.append(Question.model_validate({
            "id": f"q{len(questions) + 1:02d}", "type": "numeric", "prompt": f"Compute value {i}",
            "max_points": 2, "rubric": {"value": 9.81 * (i + 1), "abs_tol": 0.05, "rel_tol": 0.001},
        }))
    for kind in ("short_answer", "essay"):
        for prompt, crits in _TOPICS:
            max_points = 4 if kind == "short_answer" else 10
            points = max_points / len(crits)
            questions.append(Question.model_validate({
                "id": f"q{len(questions) + 1:02d}", "type": kind, "prompt": prompt, "max_points": max_points,
                "rubric": {"criteria": [
                    {"id": cid, "description": f"mentions {' and '.join(kws)}", "points": points,
                     "keywords": kws, "synonyms": syn, "min_matches": 1}
                    for cid, kws, syn in crits
                ]},
            }))
    assert len(questions) == N_QUESTIONS
    return questions


def answers_for(questions: list[Question], *, seed: int = 0) -> dict[str, Any]:
    """Answers of one student; ``seed`` varies the text (and so the grades) between students."""
    rng = random.Random(seed)
    answers: dict[str, Any] = {}
    for n, q in enumerate(questions):
        if q.type == "choice":
            answers[q.id] = ["alpha", "delta"] if q.is_multi_select else rng.choice(q.rubric.options)
        elif q.type == "numeric":
            assert q.rubric.value is not None
            answers[q.id] = round(q.rubric.value + rng.choice([0.0, 0.01, 0.5]), 3)
        else:
            chars = SHORT_ANSWER_CHARS if q.type == "short_answer" else ESSAY_CHARS
            keywords: list[str] = []
            for j, c in enumerate(q.rubric.criteria):
                mode = (n + j + seed) % 3  # 0 exact, 1 fuzzy (typo), 2 missed
                if mode == 0:
                    keywords.append(c.keywords[0])
                elif mode == 1:
                    keywords.append(" ".join(_typo(w) for w in c.keywords[0].split()))
            answers[q.id] = _prose(rng, chars, keywords)
    return answers


def payload_bytes(answers: dict[str, Any]) -> int:
    """Size of the answers as compact JSON, in bytes."""
    return len(json.dumps(answers, separators=(",", ":")).encode())
