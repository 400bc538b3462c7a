"""The reconciler starts submissions left queued (no workflow) and only those; starting is idempotent."""

from __future__ import annotations

import psycopg
from temporalio.service import RPCError

from infra.temporal.reconciler import StrandedReconciler
from infra.temporal.starter import start_grading
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    choice,
    expected_total,
    gf_settings,
    grader_calls,
    grading_workers,
    saver,
    seed,
    seed_submission,
    submission,
)
from workflows.types import GradingOutput

QUESTIONS = [choice("q1"), choice("q2", "b")]
ANSWERS = {"q1": "a", "q2": "b"}
BACKDATE_SQL = "UPDATE submissions SET created_at = now() - interval '1 hour' WHERE id = ANY(%s)"


async def _started(client, submission_id: str) -> bool:
    try:
        await client.get_workflow_handle(f"grade-{submission_id}").describe()
        return True
    except RPCError:
        return False


async def test_reconciler_starts_only_stranded_submissions_and_grades_them_once(
        temporal_client, pools, saver, gf_settings, pg_admin_url, task_queue, tenant_id):
    stranded = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    fresh = await seed_submission(pools, tenant_id, stranded.exam_id, ANSWERS)  # the API's to start
    started_by_api = await seed_submission(pools, tenant_id, stranded.exam_id, ANSWERS)
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        await conn.execute(BACKDATE_SQL, ([stranded.submission_id, started_by_api.submission_id],))

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        await start_grading(temporal_client, submission_id=started_by_api.submission_id, tenant_id=tenant_id,
                            exam_id=started_by_api.exam_id, trace_id=started_by_api.trace_id,
                            task_queue=task_queue, cognitive_queue=cog)
        api_run = (await temporal_client.get_workflow_handle(f"grade-{started_by_api.submission_id}")
                   .describe()).run_id
        reconciler = StrandedReconciler(pools, temporal_client, grace_seconds=1800, batch=1000,
                                        task_queue=task_queue, cognitive_queue=cog)
        for _ in range(2):  # a second sweep (or a second relay process) changes nothing
            await reconciler.run_once()
        out = await temporal_client.get_workflow_handle(f"grade-{stranded.submission_id}",
                                                         result_type=GradingOutput).result()
        assert await _started(temporal_client, started_by_api.submission_id)
        assert (await temporal_client.get_workflow_handle(f"grade-{started_by_api.submission_id}")
                .describe()).run_id == api_run  # not started again
        assert not await _started(temporal_client, fresh.submission_id)  # within its grace period

    assert out.status == "completed" and out.total == expected_total(QUESTIONS, ANSWERS)
    assert await grader_calls(pools, stranded) == {"q1": 1, "q2": 1}
    assert (await submission(pools, fresh))["status"] == "queued"
