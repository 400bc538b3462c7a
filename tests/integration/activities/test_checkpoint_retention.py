"""Checkpoint retention against real gradings: the threads of a final submission are pruned to their last
checkpoint (which still loads), later deleted, by the hourly maintenance workflow; others are untouched."""

from __future__ import annotations

import asyncio

import psycopg
from temporalio.testing import ActivityEnvironment

from activities.maintenance import CheckpointRetentionInput, MaintenanceActivities
from infra.stores.checkpoints import submission_threads, thread_bytes
from tests.integration.api_contract.fixtures import run_purge
from tests.integration.workflows.harness import (
    Seeded,
    choice,
    fetch_one,
    grading_workers,
    numeric,
    seed,
    submission,
    text,
)
from workflows.grading import GradingOutput

QUESTIONS = [choice("q1"), numeric("q2"), text("q3"), choice("q4", "b"), numeric("q5", 5.0)]
ANSWERS = {"q1": "a", "q2": 2.0, "q3": "photosynthesis makes glucose", "q4": "b", "q5": 4.0}
BACKDATE_SQL = "UPDATE submissions SET updated_at = now() - %s * interval '1 hour' WHERE id = %s"
THREAD_ROW_SQL = "SELECT pruned_at, deleted_at FROM checkpoint_threads WHERE thread_id = %s"


async def _grade(temporal_client, task_queue: str, cog: str, s: Seeded, **kw) -> GradingOutput:  # type: ignore[no-untyped-def]
    return await temporal_client.execute_workflow(
        "GradingWorkflow", s.grading_input(cog, **kw), id=f"grade-{s.submission_id}", task_queue=task_queue,
        result_type=GradingOutput)


async def _backdate(pg_admin_url: str, submission_id: str, hours: float) -> None:
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        await conn.execute(BACKDATE_SQL, (hours, submission_id))


async def _bytes(pools, s: Seeded) -> tuple[list[str], dict[str, int]]:  # type: ignore[no-untyped-def]
    async with pools.transaction(s.tenant_id) as conn:
        threads = await submission_threads(conn, s.submission_id)
        return threads, await thread_bytes(conn, threads)


async def test_final_submissions_threads_are_pruned_then_deleted(temporal_client, pools, saver, gf_settings,
                                                                 task_queue, tenant_id, pg_admin_url):
    final = await seed(pools, tenant_id, QUESTIONS, ANSWERS)
    waiting = await seed(pools, tenant_id, QUESTIONS, {**ANSWERS, "q3": "Photosynthesys makes glucose"})  # fuzzy
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
        assert (await _grade(temporal_client, task_queue, cog, final)).status == "completed"
        handle = await temporal_client.start_workflow(
            "GradingWorkflow", waiting.grading_input(cog, low_confidence_threshold=0.99),
            id=f"grade-{waiting.submission_id}", task_queue=task_queue)
        for _ in range(300):
            if (await submission(pools, waiting))["status"] == "needs_review":
                break
            await asyncio.sleep(0.1)
        assert (await submission(pools, waiting))["status"] == "needs_review"
        run_id = (await temporal_client.get_workflow_handle(f"grade-{final.submission_id}").describe()).run_id
        await handle.terminate("test over")

    threads, written = await _bytes(pools, final)
    assert threads == [run_id]  # thread id = run id, recorded by the grading activities
    _, waiting_before = await _bytes(pools, waiting)
    assert written["checkpoints"] > 1 and written["writes"] > 0 and waiting_before["checkpoints"] > 1
    state_before = (await saver.aget_tuple({"configurable": {"thread_id": run_id}})).checkpoint["channel_values"]

    # Final for less than the retention: nothing happens.
    await _backdate(pg_admin_url, final.submission_id, 1)
    await run_purge(temporal_client, pools, task_queue)
    assert (await _bytes(pools, final))[1] == written

    # Final for longer (and the needs_review one just as old): only the final one is pruned.
    for s in (final, waiting):
        await _backdate(pg_admin_url, s.submission_id, gf_settings.checkpoint_retention_hours + 1)
    out = await run_purge(temporal_client, pools, task_queue)
    assert out.checkpoint_threads_pruned >= 1
    _, retained = await _bytes(pools, final)
    assert retained["checkpoints"] == 1 and retained["writes"] <= written["writes"]
    assert retained["total_bytes"] < written["total_bytes"]
    assert (await _bytes(pools, waiting))[1] == waiting_before
    after = await saver.aget_tuple({"configurable": {"thread_id": run_id}})
    assert after.checkpoint["channel_values"] == state_before  # the last checkpoint still loads, whole
    print(f"\ncheckpoint bytes retained after pruning: {retained['total_bytes']} of {written['total_bytes']} "
          f"written ({retained['total_bytes'] / written['total_bytes']:.1%})")
    row = await fetch_one(pools, tenant_id, THREAD_ROW_SQL, (run_id,))
    assert row is not None and row["pruned_at"] is not None and row["deleted_at"] is None

    # Past the delete setting: the thread is gone; in chunks of one thread, by the activity itself.
    await _backdate(pg_admin_url, final.submission_id, gf_settings.checkpoint_delete_after_hours + 1)
    result = await ActivityEnvironment().run(MaintenanceActivities(pools).prune_checkpoints,
                                             CheckpointRetentionInput(reason="test", chunk=1))
    assert result.threads_deleted >= 1 and result.rows_deleted >= retained["checkpoints"]
    assert (await _bytes(pools, final))[1]["total_bytes"] == 0
    assert await saver.aget_tuple({"configurable": {"thread_id": run_id}}) is None
    row = await fetch_one(pools, tenant_id, THREAD_ROW_SQL, (run_id,))
    assert row is not None and row["deleted_at"] is not None
    assert (await _bytes(pools, waiting))[1] == waiting_before
