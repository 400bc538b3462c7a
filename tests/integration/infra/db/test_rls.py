"""Property 25 (SQL part): no tenant can read or change another tenant's rows."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.db.pools import PoolManager

INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, %s)"
INSERT_SUBMISSION_SQL = """
INSERT INTO submissions (id, tenant_id, exam_id, student_id, workflow_id, trace_id)
VALUES (%s, %s, %s, %s, %s, %s)
"""

titles = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
                 max_size=30)
tenant_data = st.lists(  # per tenant: exams, each with a number of submissions
    st.lists(st.tuples(titles, st.integers(min_value=0, max_value=3)), min_size=1, max_size=3),
    min_size=2, max_size=4,
)


async def _seed(pools: PoolManager, tenant: str, exams: list[tuple[str, int]]) -> tuple[set[str], set[str]]:
    exam_ids, submission_ids = set(), set()
    async with pools.transaction(tenant) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant,))
        for title, n_subs in exams:
            exam_id = str(uuid.uuid4())
            await conn.execute(INSERT_EXAM_SQL, (exam_id, tenant, title))
            exam_ids.add(exam_id)
            for i in range(n_subs):
                sub_id = str(uuid.uuid4())
                await conn.execute(INSERT_SUBMISSION_SQL,
                                   (sub_id, tenant, exam_id, f"student-{i}", f"grade-{sub_id}", "trace"))
                submission_ids.add(sub_id)
    return exam_ids, submission_ids


async def _ids(conn: psycopg.AsyncConnection, table: str) -> set[str]:
    cur = await conn.execute(f"SELECT id::text AS id FROM {table}")  # noqa: S608 - fixed table names
    return {row["id"] for row in await cur.fetchall()}


@given(data=tenant_data)
async def test_property25_tenants_are_isolated(pools: PoolManager, data: list[list[tuple[str, int]]]) -> None:
    tenants = [f"t-{uuid.uuid4().hex[:12]}" for _ in data]
    seeded = {t: await _seed(pools, t, exams) for t, exams in zip(tenants, data, strict=True)}

    for me in tenants:
        my_exams, my_subs = seeded[me]
        others = [t for t in tenants if t != me]
        async with pools.transaction(me) as conn:
            assert await _ids(conn, "exams") == my_exams  # mine, all of them, nobody else's
            assert await _ids(conn, "submissions") == my_subs
            cur = await conn.execute("SELECT id FROM tenants")
            assert [r["id"] for r in await cur.fetchall()] == [me]
        for other in others:
            their_exams, their_subs = seeded[other]
            async with pools.transaction(me) as conn:
                cur = await conn.execute("SELECT count(*) AS n FROM exams WHERE tenant_id = %s", (other,))
                assert (await cur.fetchone())["n"] == 0
                cur = await conn.execute("UPDATE exams SET title = 'pwned' WHERE id = ANY(%s::uuid[])",
                                         (list(their_exams),))
                assert cur.rowcount == 0
                cur = await conn.execute("UPDATE submissions SET student_id = 'x' WHERE tenant_id = %s",
                                         (other,))
                assert cur.rowcount == 0
                cur = await conn.execute("DELETE FROM submissions WHERE id = ANY(%s::uuid[])", (list(their_subs),))
                assert cur.rowcount == 0
                cur = await conn.execute("DELETE FROM exams WHERE tenant_id = %s", (other,))
                assert cur.rowcount == 0
            # Writing a row in another tenant's name fails the WITH CHECK policy.
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                async with pools.transaction(me) as conn:
                    await conn.execute(INSERT_EXAM_SQL, (str(uuid.uuid4()), other, "forged"))
            # Moving one of my rows to another tenant fails too.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                async with pools.transaction(me) as conn:
                    await conn.execute("UPDATE exams SET tenant_id = %s WHERE id = %s",
                                       (other, next(iter(my_exams))))

    # Nothing changed: each tenant still sees exactly its own rows.
    for t in tenants:
        async with pools.transaction(t) as conn:
            assert await _ids(conn, "exams") == seeded[t][0]
            assert await _ids(conn, "submissions") == seeded[t][1]
            cur = await conn.execute("SELECT count(*) AS n FROM exams WHERE title = 'pwned'")
            assert (await cur.fetchone())["n"] == 0

    # With no tenant set, the app role sees nothing at all.
    async with pools.connection() as conn:
        for table in ("tenants", "exams", "submissions", "event_outbox"):
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")  # noqa: S608
            assert (await cur.fetchone())["n"] == 0, table
        cur = await conn.execute("DELETE FROM exams")
        assert cur.rowcount == 0
        await conn.rollback()
