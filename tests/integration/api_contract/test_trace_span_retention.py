"""Retention of ``trace_spans``: the purge workflow deletes old spans of every tenant and system spans."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from activities.maintenance import SPAN_PURGE_CHUNK
from infra.settings import get_settings
from tests.integration.api_contract.fixtures import run_purge

INSERT_SPAN_SQL = """INSERT INTO trace_spans (span_id, trace_id, tenant_id, name, service, started_at, duration_ms)
VALUES (%s, %s, %s, 'op', 'test', now() - %s * interval '1 hour', 1)"""
# More than one chunk of old spans, so the activity has to loop to get them all.
INSERT_BULK_SQL = """INSERT INTO trace_spans (span_id, trace_id, tenant_id, name, service, started_at, duration_ms)
SELECT 'bulk-' || g, %s, %s, 'op', 'test', now() - %s * interval '1 hour', 1 FROM generate_series(1, %s) g"""


async def test_purge_workflow_deletes_spans_older_than_retention(temporal_client, task_queue, pools,
                                                                 pg_admin_url) -> None:
    retention = get_settings().trace_retention_hours
    trace_id = uuid.uuid4().hex
    tenants = [f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}", None]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for i, tenant in enumerate(tenants):
            conn.execute(INSERT_SPAN_SQL, (f"old-{i}", trace_id, tenant, retention + 1))
            conn.execute(INSERT_SPAN_SQL, (f"new-{i}", trace_id, tenant, retention - 1))
        conn.execute(INSERT_BULK_SQL, (trace_id, tenants[0], retention + 2, SPAN_PURGE_CHUNK + 5))
    result = await run_purge(temporal_client, pools, task_queue)
    assert result.spans_deleted >= SPAN_PURGE_CHUNK + 5 + len(tenants)
    with psycopg.connect(pg_admin_url) as conn:
        kept = sorted(r[0] for r in conn.execute("SELECT span_id FROM trace_spans WHERE trace_id = %s",
                                                 (trace_id,)))
    assert kept == ["new-0", "new-1", "new-2"]


@pytest.mark.parametrize("hours", [0, -1, None])
async def test_purge_function_refuses_non_positive_retention(pg_url, hours) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            await conn.execute("SELECT purge_old_trace_spans(%s::double precision)", (hours,))
