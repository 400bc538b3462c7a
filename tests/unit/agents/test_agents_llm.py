import json
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from agents.llm import FALLBACK_GRADER, LLM_GRADER, grade_with_llm
from tests.unit.agents.factories import text_q

ANSWER = "Photosynthesis uses sunlight and water to make glucose."


class CountingFake(GenericFakeChatModel):
    """Fake chat model (JSON path: no tool calling) counting its calls."""

    calls: int = 0

    def _generate(self, *args: Any, **kwargs: Any):
        self.calls += 1
        return super()._generate(*args, **kwargs)


class ToolCallingFake(CountingFake):
    """Fake supporting ``with_structured_output`` via tool calls."""

    def bind_tools(self, tools, **kwargs):
        return self


def _json_msgs(*payloads: Any) -> Any:
    return iter(AIMessage(content=p if isinstance(p, str) else json.dumps(p)) for p in payloads)


VALID = {"score": 3.5, "feedback": "Good.", "confidence": 0.9, "criteria_met": ["process", "inputs"]}


async def test_valid_json_output_is_used():
    model = CountingFake(messages=_json_msgs(VALID))
    g = await grade_with_llm(model, text_q(), ANSWER)
    assert g.grader == LLM_GRADER
    assert g.score == 3.5 and g.confidence == 0.9 and g.feedback == "Good."
    assert g.criteria_met == ["process", "inputs"] and g.criteria_missed == ["output"]
    assert model.calls == 1


async def test_valid_tool_call_output_is_used():
    msg = AIMessage(content="", tool_calls=[{"name": "LLMGrade", "args": VALID, "id": "1"}])
    model = ToolCallingFake(messages=iter([msg]))
    g = await grade_with_llm(model, text_q("essay"), ANSWER)
    assert g.grader == LLM_GRADER and g.score == 3.5
    assert model.calls == 1


async def test_garbage_retried_then_rubric_fallback_with_low_confidence():
    model = CountingFake(messages=_json_msgs("lol not json", "{\"score\": \"x\"}", "<html>", VALID))
    g = await grade_with_llm(model, text_q(), ANSWER)
    assert model.calls == 3  # first try + 2 retries, then give up
    assert g.grader == FALLBACK_GRADER
    assert g.confidence <= 0.3
    assert g.score == 4.0  # the rubric engine's score: all criteria met


async def test_out_of_range_and_unknown_criteria_rejected_then_valid_used():
    bad_score = {**VALID, "score": 99}
    bad_conf = {**VALID, "confidence": 7}
    model = CountingFake(messages=_json_msgs(bad_score, bad_conf, VALID))
    g = await grade_with_llm(model, text_q(), ANSWER)
    assert model.calls == 3 and g.grader == LLM_GRADER

    model = CountingFake(messages=_json_msgs(*[{**VALID, "criteria_met": ["nope"]}] * 3))
    g = await grade_with_llm(model, text_q(), ANSWER)
    assert g.grader == FALLBACK_GRADER


async def test_tool_calling_model_without_tool_call_falls_back():
    model = ToolCallingFake(messages=iter([AIMessage(content="garbage")] * 3))
    g = await grade_with_llm(model, text_q(), ANSWER)
    assert g.grader == FALLBACK_GRADER and model.calls == 3


async def test_missing_answer_skips_the_model():
    model = CountingFake(messages=_json_msgs(VALID))
    g = await grade_with_llm(model, text_q(), None)
    assert g.score == 0 and model.calls == 0
