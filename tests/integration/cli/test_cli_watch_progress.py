"""``gradeflow submit --watch`` draws a bar per question from the live feed's ``graded_questions``.

Real API on uvicorn, real grading workers slowed by ``demo_grader_delay_seconds`` (one question at a
time), the CLI as a subprocess: every question's "graded" line comes from a ``grading.progress``
message naming it, in the order the questions were graded, before the result table.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from infra.security.tokens import mint_token
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server
from tests.integration.cli.test_cli_client import cli, client_env, write
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixture

DELAY = 0.5
"""Seconds each question's grading takes (the demo setting): the feed is open long before the last one."""
QUESTIONS = ("q1", "q2", "q3", "q4")
GRADED_LINE = re.compile(r"^\s+(q\d) graded \((\d)/4\)\s*$", re.MULTILINE)


@pytest.fixture
async def slow_api_url(app_settings, temporal_client, task_queue, pools, saver) -> Any:  # noqa: F811
    """The real API with grading workers whose graders take ``DELAY`` s per question."""
    from api.app import create_app

    slow = app_settings.model_copy(update={"demo_grader_delay_seconds": DELAY})
    app = create_app(app_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
    async with grading_workers(temporal_client, pools, saver, slow, task_queue), running_server(app) as url:
        yield url


async def test_watch_fills_a_bar_per_question_as_each_is_graded(slow_api_url, services, app_settings, tenant_id,
                                                                 tmp_path):
    token = mint_token(app_settings, tenant=tenant_id, roles=["admin"])
    env = client_env(services, slow_api_url, token)
    async with httpx.AsyncClient(base_url=slow_api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        exam = await http.post("/v1/exams", json=exam_body("Progress"))
        assert exam.status_code == 201, exam.text
    body = write(tmp_path, "submission.json", {"exam_id": exam.json()["id"], "student_id": "s-bars",
                                               "answers": GOOD_ANSWERS})

    watched = await cli(env, "submit", body, "--watch", "--timeout", "90")
    assert watched.returncode == 0, (watched.stdout, watched.stderr)
    out = watched.stdout
    lines = GRADED_LINE.findall(out)
    # one line per question, counted 1..4 in the order they were graded, each question once
    assert [int(n) for _, n in lines] == [1, 2, 3, 4], out
    assert sorted(q for q, _ in lines) == list(QUESTIONS), out
    assert "questions graded" not in out, out  # the count-only fallback was not needed
    # the final frame of the bars: every question's bar full, then the result table
    table_at = out.index("submission ", out.index("accepted") + 1)
    for q in QUESTIONS:
        assert re.search(rf"^\s+{q} graded\s.*1/1", out[:table_at], re.MULTILINE), out


async def test_progress_messages_carry_the_graded_question_ids(slow_api_url, app_settings, tenant_id):
    token = mint_token(app_settings, tenant=tenant_id, roles=["admin"])
    async with httpx.AsyncClient(base_url=slow_api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        exam = await http.post("/v1/exams", json=exam_body("Progress feed"))
        assert exam.status_code == 201, exam.text
        exam_id = exam.json()["id"]
        ws_url = slow_api_url.replace("http://", "ws://") + f"/v1/ws/exams/{exam_id}?token={token}"
        async with connect(ws_url) as ws:
            json.loads(await ws.recv())  # the snapshot
            sub = await http.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s-feed",
                                                           "answers": GOOD_ANSWERS})
            assert sub.status_code == 202, sub.text
            seen: list[list[str]] = []
            while True:
                msg = json.loads(await ws.recv())
                payload = msg.get("payload") or msg.get("data") or {}
                if msg.get("event_type") == "grading.progress":
                    seen.append(payload["graded_questions"])
                    assert len(payload["graded_questions"]) == payload["questions_done"], payload
                    if payload.get("finished"):
                        break
    # graded one by one: each message's ids extend the one before, ending with all four
    assert seen[-1] == sorted(QUESTIONS), seen
    for before, after in zip(seen, seen[1:], strict=False):
        assert set(before) <= set(after), seen
    assert {len(ids) for ids in seen} >= {1, 2, 3, 4}, seen
