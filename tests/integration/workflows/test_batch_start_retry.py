"""A regrade whose batch could not be started (Temporal unreachable at POST time) is started later.

The API reaches Temporal through a TCP proxy that is cut when the regrade is posted: the batch is
stored unstarted (202, no ``batch-<id>`` workflow). The reconciler's sweep (direct client, as the
relay process has its own) starts it as it was asked for (a regrade: the finished submission gets a
new run), marks it started, and a second sweep starts nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from infra.stores import batches
from infra.temporal.reconciler import StrandedReconciler
from tests.integration.api.conftest import GOOD_ANSWERS, auth_headers, exam_body  # noqa: F401 - fixture
from tests.integration.api.server import running_server
from tests.integration.api.tcp_proxy import TcpProxy
from tests.integration.api.test_api_review import GRADED, MAX_POINTS, complete_submission
from tests.integration.workflows.harness import grading_workers, saver, seed_submission  # noqa: F401 - fixture
from workflows.batch import BatchOutput

GRACE_SECONDS = 1800.0
"""The sweep's grace: only this test's batch (backdated past it) is old enough, never another test's."""
BACKDATE_SQL = "UPDATE batches SET created_at = now() - interval '1 hour' WHERE id = %s"


async def test_regrade_posted_while_temporal_is_down_is_started_by_the_reconciler(
        app_settings, services, temporal_client, task_queue, pools, saver, auth_headers, tenant_id,  # noqa: F811
        pg_admin_url) -> None:
    from api.app import create_app

    target = urlsplit(f"//{services.temporal_address}")
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 7233) as proxy:
        proxied = await Client.connect(f"127.0.0.1:{proxy.port}")
        app = create_app(app_settings, temporal_client=proxied,
                         grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
        async with grading_workers(temporal_client, pools, saver, app_settings, task_queue) as cog, \
                running_server(app) as url, \
                httpx.AsyncClient(base_url=url, timeout=60, headers=auth_headers(tenant_id)) as http:
            exam = await http.post("/v1/exams", json=exam_body("Regrade later"))
            assert exam.status_code == 201, exam.text
            exam_id = exam.json()["id"]
            seeded = await seed_submission(pools, tenant_id, exam_id, GOOD_ANSWERS)
            sid = seeded.submission_id
            await complete_submission(pools, tenant_id, sid, {q: (s, MAX_POINTS[q]) for q, s in GRADED.items()})

            await proxy.cut()  # Temporal is unreachable for the API
            posted = await http.post(f"/v1/exams/{exam_id}/regrade", json={"scope": "all"})
            assert posted.status_code == 202, posted.text
            batch_id = posted.json()["batch_id"]
            stored = await batches.load_batch(pools, tenant_id, batch_id)
            assert stored is not None and stored["started_at"] is None and stored["kind"] == "regrade"
            with pytest.raises(RPCError) as missing:
                await temporal_client.get_workflow_handle(f"batch-{batch_id}").describe()
            assert missing.value.status == RPCStatusCode.NOT_FOUND

            with psycopg.connect(pg_admin_url, autocommit=True) as conn:  # older than the sweep's grace
                conn.execute(BACKDATE_SQL, (batch_id,))
            reconciler = StrandedReconciler(pools, temporal_client, grace_seconds=GRACE_SECONDS, task_queue=task_queue,
                                            cognitive_queue=cog, low_confidence_threshold=0.0)
            assert await reconciler.start_unstarted_batches() == 1
            handle = temporal_client.get_workflow_handle(f"batch-{batch_id}", result_type=BatchOutput)
            out: Any = await handle.result()
            run_id = (await handle.describe()).run_id
            assert await reconciler.run_once() == 0  # marked started: a second sweep starts nothing
            assert (await handle.describe()).run_id == run_id
            view = (await http.get(f"/v1/submissions/{sid}")).json()

    assert out.statuses == {sid: "completed"}  # regraded by a new run of grade-<sid>
    marked = await batches.load_batch(pools, tenant_id, batch_id)
    assert marked is not None and marked["started_at"] is not None
    assert view["status"] == "completed"
    # graded again by the rubric engines: no result is the seeded "test" grader's any more
    assert {r["question_id"] for r in view["results"]} == set(MAX_POINTS), view
    assert all(r["grader"] != "test" for r in view["results"]), view["results"]
