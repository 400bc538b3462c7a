"""Question builders shared by the agents unit tests."""

from agents.rubric import Question


def choice_q(correct: list[str], options: list[str] | None = None, *, partial: bool = True,
             max_points: float = 2.0, qid: str = "c1") -> Question:
    return Question(
        id=qid, type="choice", prompt="Pick", max_points=max_points,
        rubric={"options": options or ["a", "b", "c", "d"], "correct": correct, "partial_credit": partial},
    )


def numeric_q(value: float, *, abs_tol: float = 0.0, rel_tol: float = 0.0, max_points: float = 3.0,
              qid: str = "n1") -> Question:
    return Question(
        id=qid, type="numeric", prompt="Compute", max_points=max_points,
        rubric={"value": value, "abs_tol": abs_tol, "rel_tol": rel_tol},
    )


def text_q(qtype: str = "short_answer", *, qid: str = "t1", threshold: int = 85) -> Question:
    return Question(
        id=qid, type=qtype, prompt="Explain photosynthesis", max_points=4.0,
        rubric={
            "fuzzy_threshold": threshold,
            "criteria": [
                {"id": "process", "description": "names the process", "points": 2,
                 "keywords": ["photosynthesis", "chlorophyll"], "min_matches": 1},
                {"id": "inputs", "description": "names the inputs", "points": 1.5,
                 "keywords": ["sunlight", "water", "carbon dioxide"], "min_matches": 2,
                 "synonyms": {"sunlight": ["light energy"], "carbon dioxide": ["co2"]}},
                {"id": "output", "description": "names the output", "points": 0.5,
                 "keywords": ["glucose"], "synonyms": {"glucose": ["sugar"]}},
            ],
        },
    )
