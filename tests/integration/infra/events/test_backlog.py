"""The relay's backlog sample reads what PostgreSQL holds, across tenants, through ``outbox_backlog()``."""

from __future__ import annotations

import psycopg
from prometheus_client import REGISTRY

from infra.events.backlog import BacklogSampler
from tests.integration.infra.events.outbox_support import emit

TRUTH_SQL = """
SELECT (SELECT count(*) FROM event_outbox WHERE status = 'pending') AS pending,
       (SELECT occurred_at FROM event_outbox WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest,
       (SELECT count(*) FROM event_outbox WHERE status = 'failed') AS failed
"""
DLQ_TRUTH_SQL = "SELECT kind, status, count(*) FROM dlq_items GROUP BY kind, status"


async def test_sample_matches_the_database_across_tenants(pools, pg_admin_url, tenant_id):
    other = f"{tenant_id}-b"
    await emit(pools, tenant_id, "doc-1", 1)
    await emit(pools, other, "doc-2", 1)  # the app role sees neither without a tenant; the function sees both
    backlog = await BacklogSampler(pools).sample()
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as admin:
        pending, oldest, failed = await (await admin.execute(TRUTH_SQL)).fetchone()
        dlq = await (await admin.execute(DLQ_TRUTH_SQL)).fetchall()
    assert backlog.pending == pending >= 2 and backlog.failed == failed
    assert backlog.oldest_pending_at == oldest and backlog.oldest_pending_age > 0
    assert REGISTRY.get_sample_value("gradeflow_outbox_pending_events") == pending
    for kind, status, count in dlq:
        assert REGISTRY.get_sample_value("gradeflow_dead_letters", {"kind": kind, "status": status}) == count
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as admin:
        await admin.execute("UPDATE event_outbox SET status = 'published' WHERE tenant_id IN (%s, %s)",
                            (tenant_id, other))
