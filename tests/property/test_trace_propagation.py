# ruff: noqa: F811 - pytest fixtures are imported from the shared harness / API conftest
"""Property 10: the request's trace id reaches the workflow, every activity and graph node, and their logs.

Each example posts a generated submission through the real API (uvicorn, real lifespan) with a
generated W3C ``traceparent`` and lets in-process workers (``TracingInterceptor`` inherited from
the client) grade it. Then:

- the API answers with the traceparent's trace id, and the workflow's memo and ``TraceId`` search
  attribute hold it;
- sampled: ``trace_spans`` holds, in that trace, the request span (child of the caller's span),
  the workflow start/run spans, a span per activity and per graph node (one ``grade_question``
  per question), all linked into one tree; not sampled: no span is stored, the id still travels;
- every log record of gradeflow's code (API, workflow, activities, graph nodes) during the
  grading carries that trace id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.observability.tracing import with_tracing
from infra.temporal.starter import TRACE_KEY
from tests.integration.api.conftest import auth_headers, exam_body  # noqa: F401
from tests.integration.api.server import running_server
from tests.integration.infra.observability.test_tracing import captured_logs, flush, provider, spans_of  # noqa: F401
from tests.integration.workflows.harness import gf_settings, grading_workers, saver  # noqa: F401
from workflows.grading import GradingOutput

GRADEFLOW_LOGGERS = ("api", "activities", "agents", "infra", "workflows", "temporalio.workflow",
                     "temporalio.activity")
"""Loggers of code that runs for a submission (``temporalio.*`` adapters: workflow/activity code)."""
EXPECTED_SPANS = ("POST /v1/submissions", "StartWorkflow:GradingWorkflow", "RunWorkflow:GradingWorkflow",
                  "StartActivity:load_grading_context", "RunActivity:load_grading_context",
                  "StartActivity:run_grading_agent", "RunActivity:run_grading_agent",
                  "StartActivity:persist_grading_result", "RunActivity:persist_grading_result",
                  "node:supervisor", "node:aggregate", "node:moderate")

WORDS = ["photosynthesis", "because", "example", "glucose", "light", "plants", "maybe", ""]
ANSWERS = st.fixed_dictionaries({}, optional={
    "q1": st.sampled_from("abc"),
    "q2": st.integers(-100, 100) | st.floats(-100, 100, allow_nan=False, allow_infinity=False),
    "q3": st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join),
    "q4": st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join),
})


async def forget_trace(admin_url: str, trace_id: str) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        await conn.execute("DELETE FROM trace_spans WHERE trace_id = %s", (trace_id,))


@pytest.fixture
async def stack(app_settings, temporal_client, pools, saver, gf_settings, task_queue, provider,
                auth_headers, tenant_id) -> AsyncIterator[dict[str, Any]]:
    """API + orchestration and cognitive workers sharing one traced client, and an exam to answer."""
    from api.app import create_app

    client = with_tracing(temporal_client)
    app = create_app(app_settings, temporal_client=client, grading_options={
        "task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog", "low_confidence_threshold": 0.0})
    headers = auth_headers(tenant_id)
    async with grading_workers(client, pools, saver, gf_settings, task_queue), running_server(app) as url, \
            httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
        exam = await http.post("/v1/exams", json=exam_body())
        assert exam.status_code == 201, exam.text
        yield {"http": http, "client": client, "exam_id": exam.json()["id"], "provider": provider}


@given(trace=st.integers(1, 2**128 - 1), parent=st.integers(1, 2**64 - 1), sampled=st.booleans(),
       answers=ANSWERS)
async def test_property10_trace_id_reaches_workflow_activities_nodes_and_logs(
        stack, pg_admin_url, trace, parent, sampled, answers):
    trace_id, parent_id = format(trace, "032x"), format(parent, "016x")
    traceparent = f"00-{trace_id}-{parent_id}-{'01' if sampled else '00'}"
    await forget_trace(pg_admin_url, trace_id)  # hypothesis replays ids: start each example with none stored
    with captured_logs() as records:
        resp = await stack["http"].post(
            "/v1/submissions", headers={"traceparent": traceparent},
            json={"exam_id": stack["exam_id"], "student_id": f"s-{uuid.uuid4().hex[:6]}", "answers": answers})
        assert resp.status_code == 202, resp.text
        assert resp.json()["trace_id"] == trace_id
        handle = stack["client"].get_workflow_handle(resp.json()["workflow_id"], result_type=GradingOutput)
        assert (await asyncio.wait_for(handle.result(), 60)).status == "completed"

    desc = await handle.describe()
    assert await desc.memo_value("trace_id") == trace_id
    assert desc.typed_search_attributes.get(TRACE_KEY) == trace_id

    ours = [r for r in records if r.name.startswith(GRADEFLOW_LOGGERS)]
    assert {r.name for r in ours} >= {"activities.agent", "agents.graph"}
    assert [(r.name, r.getMessage()) for r in ours if r.trace_id != trace_id] == []

    await flush(stack["provider"])
    spans = await spans_of(pg_admin_url, trace_id)
    if not sampled:
        assert spans == []
        return
    names = [s["name"] for s in spans]
    assert set(EXPECTED_SPANS) <= set(names), sorted(set(EXPECTED_SPANS) - set(names))
    assert names.count("node:grade_question") == 4  # one per question of the exam
    request = next(s for s in spans if s["name"] == "POST /v1/submissions")
    assert request["parent_span_id"] == parent_id
    ids = {s["span_id"] for s in spans} | {parent_id}
    assert [s["name"] for s in spans if s["parent_span_id"] not in ids] == []  # one tree under the caller


async def test_request_without_traceparent_uses_its_span_trace_id(stack, pg_admin_url):
    resp = await stack["http"].post("/v1/submissions", json={"exam_id": stack["exam_id"], "student_id": "s",
                                                             "answers": {"q1": "b"}})
    assert resp.status_code == 202, resp.text
    trace_id = resp.json()["trace_id"]
    handle = stack["client"].get_workflow_handle(resp.json()["workflow_id"], result_type=GradingOutput)
    await asyncio.wait_for(handle.result(), 60)
    await flush(stack["provider"])
    spans = {s["name"]: s for s in await spans_of(pg_admin_url, trace_id)}
    assert spans["POST /v1/submissions"]["parent_span_id"] is None
    assert "RunActivity:run_grading_agent" in spans and "node:moderate" in spans

