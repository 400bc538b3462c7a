# ruff: noqa: F811 - pytest fixtures are imported from the shared modules
"""One trace per request, and reading it back: ``GET /v1/traces/{id}`` and ``gradeflow trace <id>``.

Real API (uvicorn, real lifespan), in-process orchestration and cognitive workers on a traced client,
spans exported to the session's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import psycopg
from psycopg.rows import dict_row

from tests.integration.api.conftest import auth_headers  # noqa: F401
from tests.integration.infra.observability.test_tracing import flush, provider, spans_of  # noqa: F401
from tests.integration.workflows.harness import gf_settings, saver  # noqa: F401
from tests.property.test_trace_propagation import stack  # noqa: F401
from workflows.grading import GradingOutput

SPANS_OF_PATH_SQL = "SELECT * FROM trace_spans WHERE attributes->>'url.path' = %s"


async def _spans_with_path(admin_url: str, path: str) -> list[dict]:
    async with await psycopg.AsyncConnection.connect(admin_url, row_factory=dict_row) as conn:
        return await (await conn.execute(SPANS_OF_PATH_SQL, (path,))).fetchall()


async def test_one_request_is_one_span_in_one_trace(stack, pg_admin_url):
    path = f"/v1/exams/{uuid.uuid4()}"
    resp = await stack["http"].get(path)
    assert resp.status_code == 404
    await flush(stack["provider"])
    spans = await _spans_with_path(pg_admin_url, path)
    assert [s["name"] for s in spans] == ["GET /v1/exams/{exam_id}"]  # one HTTP instrumentation, not two
    assert [s["span_id"] for s in await spans_of(pg_admin_url, spans[0]["trace_id"])] == [spans[0]["span_id"]]
    assert spans[0]["tenant_id"] is not None  # the caller's tenant: filed under it, not as a system span


async def test_a_submission_is_one_tree_that_its_tenant_and_operators_can_read(stack, pg_admin_url, services,
                                                                                auth_headers, tenant_id):
    http = stack["http"]
    resp = await http.post("/v1/submissions", json={"exam_id": stack["exam_id"], "student_id": "s-tree",
                                                    "answers": {"q1": "b", "q2": 42}})
    assert resp.status_code == 202, resp.text
    trace_id, submission_id = resp.json()["trace_id"], resp.json()["submission_id"]
    handle = stack["client"].get_workflow_handle(resp.json()["workflow_id"], result_type=GradingOutput)
    await asyncio.wait_for(handle.result(), 60)
    await flush(stack["provider"])

    spans = await spans_of(pg_admin_url, trace_id)
    ids = {s["span_id"] for s in spans}
    roots = [s["name"] for s in spans if s["parent_span_id"] is None]
    assert roots == ["POST /v1/submissions"]  # one root: the request
    assert [s["name"] for s in spans if s["parent_span_id"] not in ids | {None}] == []  # no orphans
    assert len(await _spans_with_path(pg_admin_url, "/v1/submissions")) >= 1
    # every span of the grading belongs to the tenant (baggage through Temporal), none is a system span
    assert {s["tenant_id"] for s in spans} == {tenant_id}
    graded = [s for s in spans if s["name"].startswith(("RunActivity:", "node:"))]
    assert graded and {s["attributes"].get("gradeflow.submission_id") for s in graded} == {submission_id}

    tree = await http.get(f"/v1/traces/{trace_id.upper()}")
    assert tree.status_code == 200, tree.text
    body = tree.json()
    assert body["trace_id"] == trace_id and body["span_count"] == len(spans) and body["errors"] == 0
    assert [root["name"] for root in body["spans"]] == ["POST /v1/submissions"]

    def walk(node: dict) -> list[dict]:
        return [node, *(n for child in node["children"] for n in walk(child))]

    nodes = walk(body["spans"][0])
    assert len(nodes) == len(spans) and all(n["duration_ms"] >= 0 and n["offset_ms"] >= 0 for n in nodes)
    names = {n["name"] for n in nodes}
    assert {"RunWorkflow:GradingWorkflow", "RunActivity:run_grading_agent", "node:grade_question"} <= names

    other = await http.get(f"/v1/traces/{trace_id}", headers=auth_headers(f"t-{uuid.uuid4().hex[:12]}"))
    assert other.status_code == 404  # another tenant sees none of it
    submitter = await http.get(f"/v1/traces/{trace_id}", headers=auth_headers(tenant_id, roles=("submitter",)))
    assert submitter.status_code == 403
    assert (await http.get("/v1/traces/not-a-trace")).status_code == 422

    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "infra.cli", "trace", trace_id],
                                  env=services.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}: {len(spans)} spans")
    assert "  POST /v1/submissions [" in lines[1]  # the root, first
    assert any("└─ " in line or "├─ " in line for line in lines[2:])
    assert sum("node:grade_question" in line for line in lines) == 4  # one per question of the exam
    assert all(" ms " in line for line in lines[1:])
