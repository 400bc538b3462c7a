"""The exam's live feed carries a batch's progress as it advances (issue 11), over the real feed.

Real API on uvicorn, real grading workers (the batch workflow publishes through its activity), a real
WebSocket client on ``/v1/ws/exams/{id}``: ``batch.progress`` messages arrive in order from 0 % to
100 %, their counts add up and end equal to ``GET /v1/batches/{id}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from infra.security.tokens import mint_token
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixture

SUBMISSIONS = 3
WAIT_SECONDS = 90.0
"""Longest wait for the last message (the loop ends when it arrives)."""


@pytest.fixture
async def batch_api(app_settings, temporal_client, task_queue, pools, saver) -> Any:  # noqa: F811
    """The real API whose gradings never ask for review (threshold 0), with real grading workers."""
    from api.app import create_app

    app = create_app(app_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog",
                                      "low_confidence_threshold": 0.0})
    async with grading_workers(temporal_client, pools, saver, app_settings, task_queue), running_server(app) as url:
        yield url


async def _batch_messages(ws: Any, batch_id: str) -> list[dict[str, Any]]:
    """``batch.progress`` messages of ``batch_id`` until one says every child is done."""
    out: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not out or out[-1]["payload"]["done"] < out[-1]["payload"]["total"]:
        remaining = deadline - asyncio.get_running_loop().time()
        assert remaining > 0, f"no final batch.progress; got {out}"
        msg = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if msg["event_type"] == "batch.progress" and msg["payload"]["batch_id"] == batch_id:
            out.append(msg)
    return out


async def test_exam_feed_carries_batch_progress_to_the_end(batch_api, app_settings, tenant_id) -> None:
    token = mint_token(app_settings, tenant=tenant_id, roles=["admin"])
    async with httpx.AsyncClient(base_url=batch_api, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        exam = await http.post("/v1/exams", json=exam_body("Batch feed"))
        assert exam.status_code == 201, exam.text
        exam_id = exam.json()["id"]
        feed = batch_api.replace("http://", "ws://") + f"/v1/ws/exams/{exam_id}?token={token}"
        async with connect(feed) as ws, connect(feed) as second:
            assert json.loads(await ws.recv())["event_type"] == "snapshot"
            assert json.loads(await second.recv())["event_type"] == "snapshot"
            batch = await http.post(f"/v1/exams/{exam_id}/batches", json={
                "submissions": [{"student_id": f"s-{i}", "answers": GOOD_ANSWERS} for i in range(SUBMISSIONS)],
                "max_concurrent": 1})
            assert batch.status_code == 202, batch.text
            batch_id = batch.json()["batch_id"]
            messages = await _batch_messages(ws, batch_id)
            again = await _batch_messages(second, batch_id)  # every feed of the exam gets the same
        final = await http.get(f"/v1/batches/{batch_id}")
    assert final.status_code == 200, final.text

    payloads = [m["payload"] for m in messages]
    assert payloads == [m["payload"] for m in again]
    assert all(m["submission_id"] is None for m in messages), messages  # about the batch, not a submission
    assert payloads[0]["done"] == 0 and payloads[0]["percentage"] == 0  # published as the batch starts
    dones = [p["done"] for p in payloads]
    assert dones == sorted(set(dones)), dones  # in order, each step once
    for p in payloads:
        assert p["total"] == SUBMISSIONS and p["kind"] == "grade"
        assert sum(p["counts"].values()) == p["done"]
        assert p["percentage"] == round(100 * p["done"] / SUBMISSIONS, 1)
        assert p["running"] <= 1  # max_concurrent
    last = payloads[-1]
    assert last["percentage"] == 100 and last["counts"] == {"completed": SUBMISSIONS}, last
    assert final.json()["counts"] == last["counts"] and final.json()["done"] == SUBMISSIONS, final.json()
