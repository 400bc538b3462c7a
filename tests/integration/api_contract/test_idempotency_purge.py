"""The purge of expired idempotency keys: workflow + activity on a real Temporal, and its Schedule."""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
from temporalio.client import ScheduleIntervalSpec

from infra.temporal.schedules import ensure_purge_schedule
from tests.integration.api_contract.fixtures import run_purge
from tests.integration.api_contract.miniapp import ensure_tenant

INSERT_KEY_SQL = """INSERT INTO idempotency_cache (tenant_id, caller, method, path, key, fingerprint, state,
expires_at) VALUES (%s, 'c', 'POST', '/v1/x', %s, 'f', 'done', now() + %s * interval '1 hour')"""


async def test_purge_workflow_deletes_only_expired_keys(temporal_client, task_queue, pools, pg_admin_url,
                                                        tenant_id) -> None:
    ensure_tenant(pg_admin_url, tenant_id)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(INSERT_KEY_SQL, (tenant_id, "old", -1))
        conn.execute(INSERT_KEY_SQL, (tenant_id, "fresh", 1))
    result = await run_purge(temporal_client, pools, task_queue)
    assert result.deleted >= 1
    with psycopg.connect(pg_admin_url) as conn:
        keys = [r[0] for r in conn.execute("SELECT key FROM idempotency_cache WHERE tenant_id = %s",
                                           (tenant_id,))]
    assert keys == ["fresh"]


async def test_schedule_is_created_once_and_updated_in_place(temporal_client, task_queue) -> None:
    schedule_id = f"test-purge-{uuid.uuid4()}"
    await ensure_purge_schedule(temporal_client, task_queue=task_queue, schedule_id=schedule_id)
    await ensure_purge_schedule(temporal_client, task_queue=task_queue, schedule_id=schedule_id,
                                every=timedelta(minutes=30))
    handle = temporal_client.get_schedule_handle(schedule_id)
    try:
        described = await handle.describe()
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=30))]
        assert described.schedule.action.task_queue == task_queue
    finally:
        await handle.delete()
