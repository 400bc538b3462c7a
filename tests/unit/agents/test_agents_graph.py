import json
import uuid
from collections import Counter

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from agents.context import GradingContext
from agents.graph import build_grading_graph
from agents.state import QuestionGrade
from tests.unit.agents.factories import choice_q, numeric_q, text_q

QUESTIONS = [choice_q(["a"], qid="c"), numeric_q(2.0, abs_tol=0.1, qid="n"), text_q(qid="t")]
ANSWERS = {"c": "a", "n": "2.05", "t": "Photosynthesis uses sunlight and water to make glucose."}


def _ctx(**kw) -> GradingContext:
    base = dict(submission_id="s1", tenant_id="t1", trace_id="tr1", questions=QUESTIONS, answers=ANSWERS)
    return GradingContext(**{**base, **kw})


def _cfg() -> dict:
    return {"configurable": {"thread_id": str(uuid.uuid4())}}


async def test_graph_grades_every_question_and_totals():
    out = await build_grading_graph().ainvoke({}, context=_ctx())
    assert set(out["grades"]) == {"c", "n", "t"}
    assert out["total"] == pytest.approx(2 + 3 + 4)
    assert out["max_total"] == pytest.approx(9)
    assert out["flagged"] == [] and out["status"] == "graded"
    QuestionGrade.model_validate(out["grades"]["t"])


async def test_low_confidence_is_flagged_for_review():
    answers = {**ANSWERS, "t": "Photosynthesys"}  # fuzzy-only match → lower confidence
    out = await build_grading_graph().ainvoke({}, context=_ctx(answers=answers, low_confidence_threshold=0.95))
    assert out["flagged"] == ["t"] and out["status"] == "needs_review"


async def test_missing_answers_grade_zero():
    out = await build_grading_graph().ainvoke({}, context=_ctx(answers={}))
    assert out["total"] == 0 and out["status"] == "graded"


async def test_on_grade_called_once_per_question():
    seen: list[str] = []

    async def on_grade(qid: str, grade: QuestionGrade) -> None:
        assert grade.question_id == qid
        seen.append(qid)

    await build_grading_graph(on_grade=on_grade).ainvoke({}, context=_ctx())
    assert sorted(seen) == ["c", "n", "t"]


async def test_llm_model_used_for_text_questions_only():
    payload = {"score": 1.0, "feedback": "meh", "confidence": 0.8, "criteria_met": ["output"]}
    model = GenericFakeChatModel(messages=iter([AIMessage(content=json.dumps(payload))]))
    out = await build_grading_graph(model=model).ainvoke({}, context=_ctx())
    assert out["grades"]["t"]["grader"] == "llm" and out["grades"]["t"]["score"] == 1.0
    assert out["grades"]["c"]["grader"] == "choice"


async def test_resume_after_crash_does_not_regrade_finished_questions():
    calls: Counter[str] = Counter()
    crash = {"t"}

    async def on_grade(qid: str, grade: QuestionGrade) -> None:
        calls[qid] += 1
        if qid in crash:
            crash.discard(qid)
            raise RuntimeError("worker died")

    graph = build_grading_graph(InMemorySaver(), on_grade=on_grade)
    cfg, ctx = _cfg(), _ctx()
    with pytest.raises(RuntimeError, match="worker died"):
        await graph.ainvoke({}, cfg, context=ctx)
    assert calls == Counter({"c": 1, "n": 1, "t": 1})
    state = await graph.aget_state(cfg)  # the view applies pending writes of finished tasks
    assert set(state.values["grades"]) == {"c", "n"}
    assert [t.error for t in state.tasks if t.error] == ["RuntimeError('worker died')"]
    out = await graph.ainvoke(None, cfg, context=ctx)
    assert calls == Counter({"c": 1, "n": 1, "t": 2})  # only the crashed question re-ran
    assert set(out["grades"]) == {"c", "n", "t"} and out["status"] == "graded"


async def test_rerun_on_finished_thread_skips_graded_questions():
    calls: Counter[str] = Counter()

    async def on_grade(qid: str, grade: QuestionGrade) -> None:
        calls[qid] += 1

    graph = build_grading_graph(InMemorySaver(), on_grade=on_grade)
    cfg = _cfg()
    await graph.ainvoke({}, cfg, context=_ctx(questions=QUESTIONS[:2]))
    out = await graph.ainvoke({}, cfg, context=_ctx())  # one more question now
    assert calls == Counter({"c": 1, "n": 1, "t": 1})
    assert out["total"] == pytest.approx(9)
    await graph.ainvoke({}, cfg, context=_ctx())
    assert sum(calls.values()) == 3


async def test_duplicate_question_ids_rejected():
    with pytest.raises(ValueError, match="unique"):
        await build_grading_graph().ainvoke({}, context=_ctx(questions=[QUESTIONS[0], QUESTIONS[0]]))
