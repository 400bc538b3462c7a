"""Operators find gradings in Temporal by exam, student and status; the summary names exam and student.

Through the real API (single submission and a batch) with real workers: the visibility query
``GradeflowExam="…" AND GradeflowStatus="<the status PostgreSQL holds>"`` lists the grading once it
has settled, ``GradeflowStudent`` finds it by student, and ``describe()`` shows the static summary.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.api.conftest import GOOD_ANSWERS, auth_headers, exam_body  # noqa: F401 - fixture
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixture

SETTLED = ("completed", "needs_review")
WAIT_SECONDS = 60.0
"""Longest wait for grading to settle and for visibility to list it (the loop ends as soon as it does)."""


@pytest.fixture
async def graded_api(app_settings, temporal_client, task_queue, pools, saver, auth_headers,  # noqa: F811
                     tenant_id) -> Any:
    """An HTTP client on the real API, with real grading workers on the test's queues."""
    from api.app import create_app

    app = create_app(app_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
    async with grading_workers(temporal_client, pools, saver, app_settings, task_queue), running_server(app) as url, \
            httpx.AsyncClient(base_url=url, timeout=30, headers=auth_headers(tenant_id)) as http:
        yield http


async def _settled(http: httpx.AsyncClient, sid: str) -> str:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        status = (await http.get(f"/v1/submissions/{sid}")).json()["status"]
        if status in SETTLED or asyncio.get_running_loop().time() > deadline:
            return str(status)
        await asyncio.sleep(0.2)


async def _listed(client: Any, query: str, expected: set[str]) -> set[str]:
    """Workflow ids the visibility query lists, once they include ``expected`` (or the wait ends)."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        found = {wf.id async for wf in client.list_workflows(query)}
        if expected <= found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_a_grading_is_found_by_exam_student_and_status_and_summarised(graded_api, temporal_client) -> None:
    title = f"Chemistry {uuid.uuid4().hex[:8]}"
    exam = await graded_api.post("/v1/exams", json=exam_body(title))
    assert exam.status_code == 201, exam.text
    exam_id, student = exam.json()["id"], f"s-{uuid.uuid4().hex[:8]}"
    sub = await graded_api.post("/v1/submissions", json={"exam_id": exam_id, "student_id": student,
                                                         "answers": GOOD_ANSWERS})
    assert sub.status_code == 202, sub.text
    sid = sub.json()["submission_id"]
    status = await _settled(graded_api, sid)
    assert status in SETTLED

    wanted = {f"grade-{sid}"}
    assert await _listed(temporal_client, f'GradeflowExam="{exam_id}" AND GradeflowStatus="{status}"', wanted) \
        == wanted
    assert await _listed(temporal_client, f'GradeflowStudent="{student}"', wanted) == wanted
    # the status attribute moved on: nothing of this exam is listed as still queued or grading
    assert await _listed(temporal_client, f'GradeflowExam="{exam_id}" AND GradeflowStatus IN ("queued", "grading")',
                         set()) == set()

    description = await temporal_client.get_workflow_handle(f"grade-{sid}").describe()
    summary = await description.static_summary()
    assert summary is not None and title in summary and f"student {student}" in summary, summary
    details = await description.static_details()
    assert details is not None and exam_id in details and sid in details, details


async def test_batch_children_carry_exam_student_and_status(graded_api, temporal_client) -> None:
    title = f"Physics {uuid.uuid4().hex[:8]}"
    exam = await graded_api.post("/v1/exams", json=exam_body(title))
    exam_id = exam.json()["id"]
    students = [f"b-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    batch = await graded_api.post(f"/v1/exams/{exam_id}/batches", json={
        "submissions": [{"student_id": s, "answers": GOOD_ANSWERS} for s in students], "max_concurrent": 2})
    assert batch.status_code == 202, batch.text
    page = await graded_api.get("/v1/submissions", params={"exam_id": exam_id, "page_size": 10})
    assert page.status_code == 200, page.text
    student_of = {item["id"]: item["student_id"] for item in page.json()["items"]}
    assert sorted(student_of.values()) == sorted(students), student_of
    statuses = {sid: await _settled(graded_api, sid) for sid in student_of}
    assert set(statuses.values()) <= set(SETTLED), statuses

    for sid, status in statuses.items():
        wanted = {f"grade-{sid}"}
        assert await _listed(temporal_client, f'GradeflowExam="{exam_id}" AND GradeflowStatus="{status}" '
                                              f'AND GradeflowStudent="{student_of[sid]}"', wanted) == wanted
    sids = list(student_of)
    summary = await (await temporal_client.get_workflow_handle(f"grade-{sids[0]}").describe()).static_summary()
    assert summary is not None and title in summary, summary

