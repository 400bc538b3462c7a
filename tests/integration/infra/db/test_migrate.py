"""Migrations: idempotent, safe under concurrency, and RLS is on for the app role."""

from __future__ import annotations

import psycopg

from infra.db.migrate import discover, migrate


async def test_applying_twice_is_a_noop(pg_admin_url: str) -> None:
    applied = await migrate(pg_admin_url, app_password="gradeflow-test-app", log=lambda _: None)
    assert applied == []
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        versions = [row[0] for row in await cur.fetchall()]
    assert versions == [m.version for m in discover()]


async def test_app_role_is_bound_by_rls(pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert await cur.fetchone() == (False, False)
        cur = await conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname='public' AND tableowner = current_user"
        )
        assert (await cur.fetchone())[0] == 0
