"""Apply ``migrations/NNNN_*.sql`` in order, once each, under a PostgreSQL advisory lock.

Two concurrent runs are safe: the second waits for the lock and then finds nothing left to do.
Also creates the RLS-bound application role, the LangGraph checkpoint tables, and the grants.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

APP_ROLE = "gradeflow_app"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
LOCK_KEY = 0x67726164  # "grad"

# Polled with try-lock rather than blocking: a waiter blocked inside pg_advisory_lock holds a
# transaction open, and the checkpoint set-up's CREATE INDEX CONCURRENTLY would wait for it forever.
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(%s)"
UNLOCK_SQL = "SELECT pg_advisory_unlock(%s)"
CREATE_LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
APPLIED_SQL = "SELECT version, checksum FROM schema_migrations"
RECORD_SQL = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
ROLE_EXISTS_SQL = "SELECT 1 FROM pg_roles WHERE rolname = %s"
GRANT_SQL = [
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "REVOKE ALL ON schema_migrations FROM {role}",
    "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role}",
]


@dataclass(frozen=True)
class Migration:
    """One SQL file of ``migrations/``."""

    version: str
    """The numeric prefix, e.g. ``0001``."""
    name: str
    """The file name."""
    sql_text: str
    """The file's SQL."""

    @property
    def checksum(self) -> str:
        """sha256 of the SQL, to notice files edited after they were applied."""
        return hashlib.sha256(self.sql_text.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """List the migrations in ``directory`` sorted by version."""
    found = []
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        found.append(Migration(path.name[:4], path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {directory}")
    return found


async def migrate(admin_url: str, *, app_password: str, log: Callable[[str], None] = print,
                  directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied by this call.

    Args:
        admin_url: URL of a role that owns the schema (or a superuser).
        app_password: password given to the application role.
        log: receives one progress line per step.
        directory: where the SQL files are.

    """
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await _acquire_lock(conn, log)
        try:
            await conn.execute(CREATE_LEDGER_SQL)
            await _ensure_app_role(conn, app_password)
            cur = await conn.execute(APPLIED_SQL)
            applied = {version: checksum for version, checksum in await cur.fetchall()}
            for migration in discover(directory):
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        log(f"warning: {migration.name} changed after it was applied; not re-applied")
                    continue
                started = time.monotonic()
                async with conn.transaction():
                    await conn.execute(migration.sql_text.encode())
                    await conn.execute(RECORD_SQL, (migration.version, migration.name, migration.checksum))
                applied_now.append(migration.name)
                log(f"applied {migration.name} ({(time.monotonic() - started) * 1000:.0f} ms)")
            await _setup_checkpoint_tables(admin_url)
            for statement in GRANT_SQL:
                await conn.execute(sql.SQL(statement).format(role=sql.Identifier(APP_ROLE)))
        finally:
            await conn.execute(UNLOCK_SQL, (LOCK_KEY,))
    if not applied_now:
        log("database schema is up to date")
    return applied_now


async def _acquire_lock(conn: psycopg.AsyncConnection, log: Callable[[str], None]) -> None:
    waited = False
    while True:
        cur = await conn.execute(TRY_LOCK_SQL, (LOCK_KEY,))
        row = await cur.fetchone()
        if row and row[0]:
            return
        if not waited:
            log("another migration is running; waiting for it")
            waited = True
        await asyncio.sleep(0.2)


async def _ensure_app_role(conn: psycopg.AsyncConnection, password: str) -> None:
    cur = await conn.execute(ROLE_EXISTS_SQL, (APP_ROLE,))
    verb = "ALTER" if await cur.fetchone() else "CREATE"
    await conn.execute(
        sql.SQL(verb + " ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {pw}").format(
            role=sql.Identifier(APP_ROLE), pw=sql.Literal(password)
        )
    )


async def _setup_checkpoint_tables(admin_url: str) -> None:
    """Create LangGraph's checkpoint tables with the stock saver's own migrations."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with await psycopg.AsyncConnection.connect(
        admin_url, autocommit=True, prepare_threshold=0, row_factory=dict_row
    ) as conn:
        await AsyncPostgresSaver(conn).setup()  # type: ignore[arg-type]


def app_url_from_admin(admin_url: str, password: str, database: str | None = None) -> str:
    """Build the application role's URL from an admin URL (same host, port and database)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(admin_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{APP_ROLE}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))
