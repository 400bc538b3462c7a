"""The API dies between the commit and the workflow start: the relay's reconciler starts the grading,
and the submission is graded exactly once (even when the event is delivered again)."""

from __future__ import annotations

import asyncio

import httpx
from temporalio.worker import Worker

from activities.agent import AgentActivities
from infra.constants import COGNITIVE_QUEUE, EventType
from infra.events.outbox import EventEnvelope
from infra.events.relay import OutboxRelay
from infra.temporal.starter import make_reconciler_handler
from tests.integration.api.conftest import GOOD_ANSWERS, auth_headers, closed_port, exam_body  # noqa: F401
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixtures

GRADER_CALLS_SQL = "SELECT question_id, count(*) AS n FROM grader_calls WHERE submission_id = %s GROUP BY 1"
OUTBOX_SQL = "SELECT * FROM event_outbox WHERE target_id = %s AND event_type = %s"
STATUS_SQL = "SELECT status FROM submissions WHERE id = %s"


async def test_reconciler_starts_a_stranded_submission_graded_exactly_once(
        app_settings, auth_headers, tenant_id, closed_port, pools, temporal_client, saver, task_queue):
    from api.app import create_app

    # 1. The API commits, but cannot start the workflow (Temporal unreachable), then the API goes away.
    down = app_settings.model_copy(update={"temporal_address": f"127.0.0.1:{closed_port}"})
    headers = auth_headers(tenant_id)
    async with running_server(create_app(down)) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        exam = (await http.post("/v1/exams", json=exam_body(), headers=headers)).json()
        resp = await http.post("/v1/submissions", json={"exam_id": exam["id"], "student_id": "s1",
                                                        "answers": GOOD_ANSWERS}, headers=headers)
        assert resp.status_code == 202, resp.text
        sid = resp.json()["submission_id"]
    async with pools.transaction(tenant_id) as conn:
        assert (await (await conn.execute(STATUS_SQL, (sid,))).fetchone())["status"] == "queued"

    # 2. The relay publishes submission.received; its reconciler starts the grading.
    handler = make_reconciler_handler(temporal_client, task_queue=task_queue, settings=app_settings)
    relay = OutboxRelay(pools, poll_interval=0.2, handlers={EventType.SUBMISSION_RECEIVED.value: handler})
    stop = asyncio.Event()
    async with grading_workers(temporal_client, pools, saver, app_settings, task_queue, cognitive=False):
        agent = AgentActivities(pools, saver, app_settings, None)
        async with Worker(temporal_client, task_queue=COGNITIVE_QUEUE, activities=[agent.run_grading_agent]):
            relay_task = asyncio.create_task(relay.run(stop))
            try:
                handle = temporal_client.get_workflow_handle(f"grade-{sid}")
                for _ in range(300):
                    try:
                        await handle.describe()
                        break
                    except Exception:  # noqa: BLE001 - not started yet
                        await asyncio.sleep(0.1)
                await asyncio.wait_for(handle.result(), 60)
                # 3. The event is delivered again (at least once): nothing is graded twice.
                async with pools.transaction(tenant_id) as conn:
                    row = await (await conn.execute(OUTBOX_SQL, (sid, EventType.SUBMISSION_RECEIVED.value))
                                 ).fetchone()
                assert row["status"] == "published"
                await handler(EventEnvelope.from_row(row))
            finally:
                stop.set()
                await asyncio.wait_for(relay_task, 15)
    async with pools.transaction(tenant_id) as conn:
        status = (await (await conn.execute(STATUS_SQL, (sid,))).fetchone())["status"]
        calls = {r["question_id"]: r["n"] for r in await (await conn.execute(GRADER_CALLS_SQL, (sid,))).fetchall()}
    assert status in ("completed", "needs_review")
    assert calls == {"q1": 1, "q2": 1, "q3": 1, "q4": 1}
