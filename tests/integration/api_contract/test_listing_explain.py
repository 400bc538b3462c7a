"""List queries use indexes: EXPLAIN on 100k submissions shows no sequential scan for the default
sort and for the status filter (planned as the RLS-bound app role, under the tenant)."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from infra.db.listing import SUBMISSIONS, ListQuery, build_list_sql

ROWS = 100_000
BULK_INSERT_SQL = """
INSERT INTO submissions (id, tenant_id, exam_id, student_id, status, total, max_total, workflow_id, trace_id,
                         created_at)
SELECT gen_random_uuid(), %(tenant)s, %(exam)s, 's-' || (g %% 5000),
       (ARRAY['queued','grading','needs_review','completed','failed','needs_intervention'])[1 + g %% 6],
       g %% 11, 10, 'grade-' || g, 'trace', now() - make_interval(secs => g)
  FROM generate_series(1, %(rows)s) AS g
"""


def _plan_nodes(plan: dict) -> list[str]:
    nodes = [plan["Node Type"]]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.fixture(scope="module")
def big_tenant(services):
    tenant, exam = f"t-big-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id) VALUES (%s)", (tenant,))
        conn.execute("INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, 'big')", (exam, tenant))
        conn.execute(BULK_INSERT_SQL, {"tenant": tenant, "exam": exam, "rows": ROWS})
        conn.execute("ANALYZE submissions")
    yield tenant
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute("DELETE FROM submissions WHERE tenant_id = %s", (tenant,))
        conn.execute("DELETE FROM exams WHERE tenant_id = %s", (tenant,))
        conn.execute("ANALYZE submissions")


@pytest.mark.parametrize("query", [
    ListQuery(), ListQuery(filters={"status": "completed"}), ListQuery(page=50, filters={"status": "failed"}),
    ListQuery(sort_order="asc", filters={"status": "queued"}),
], ids=["default", "status", "status-deep-page", "status-asc"])
def test_no_sequential_scan(services, big_tenant, query) -> None:
    statement, params = build_list_sql(SUBMISSIONS, query, big_tenant)
    with psycopg.connect(services.app_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.current_tenant', %s, true)", (big_tenant,))
        assert conn.execute("SELECT count(*) FROM submissions").fetchone()[0] == ROWS  # RLS scope
        raw = conn.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + statement, params).fetchone()[0]
    plan = (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]
    nodes = _plan_nodes(plan)
    assert "Seq Scan" not in nodes, nodes
    assert any("Index" in n for n in nodes), nodes


async def test_slow_list_queries_are_logged_with_trace_id_and_counted(pools, big_tenant, caplog) -> None:
    from infra.db.listing import SLOW_LIST_QUERIES, fetch_page

    before = SLOW_LIST_QUERIES.labels("submissions")._value.get()
    with caplog.at_level("WARNING", logger="infra.db.listing"):
        page = await fetch_page(pools, big_tenant, SUBMISSIONS, ListQuery(page_size=5), slow_ms=1e-6,
                                trace_id="abc123")
    assert len(page.items) == 5 and page.next_cursor
    assert SLOW_LIST_QUERIES.labels("submissions")._value.get() == before + 1
    assert "trace_id=abc123" in caplog.text
