"""Restoring backups: into a database (``gradeflow restore``) and into a scratch one to verify them.

Both check the dump against the checksum of its manifest first and restore with ``pg_restore
--single-transaction --exit-on-error --no-owner`` (objects belong to the restoring owner; grants to
``gradeflow_app`` are kept, the role is created first if the server lacks it). A restore refuses a
database that holds any table, view or sequence unless forced (``--clean --if-exists`` then replaces
what the dump holds). Row counts per table are compared with the manifest afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from infra.db.backup import (
    BackupError,
    Verification,
    database_name,
    find_pg_tools,
    pg_env,
    read_manifest,
    run_tool,
    sha256_of,
    table_counts,
    with_database,
)

logger = logging.getLogger(__name__)

SERVER_VERSION_SQL = "SELECT current_setting('server_version_num')::int"
OBJECTS_SQL = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'"""
RESTORE_ARGS = ["--single-transaction", "--exit-on-error", "--no-owner", "--no-password"]


class NotEmptyError(BackupError):
    """The target database holds objects and the restore was not forced."""


@dataclass
class RestoreResult:
    """What a restore did."""

    database: str
    tables: dict[str, int] = field(default_factory=dict)
    """Row counts after the restore."""
    mismatches: dict[str, list[int | None]] = field(default_factory=dict)
    """Tables whose count differs from the manifest: ``[expected, found]``."""
    created_database: bool = False
    """The database did not exist and was created."""


def compare_counts(expected: dict[str, int], found: dict[str, int]) -> dict[str, list[int | None]]:
    """``table -> [expected, found]`` for every table that differs or is missing on one side."""
    return {table: [expected.get(table), found.get(table)] for table in sorted(set(expected) | set(found))
            if expected.get(table) != found.get(table)}


async def check_checksum(dump: Path) -> dict[str, Any]:
    """Return the manifest of ``dump`` after checking its sha256; :class:`BackupError` on a mismatch."""
    manifest = read_manifest(dump)
    digest = await asyncio.to_thread(sha256_of, dump)
    if digest != manifest.get("sha256"):
        raise BackupError(f"{dump.name}: checksum mismatch (manifest {manifest.get('sha256')}, file {digest}); "
                          "the file is damaged")
    return manifest


async def _server_version(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute(SERVER_VERSION_SQL)).fetchone()
    return int(row[0]) if row else 0


async def verify_backup(admin_url: str, dump: Path, *, bin_dir: Path | None = None,
                        log: Callable[[str], None] = logger.info) -> Verification:
    """Restore ``dump`` into a scratch database of ``admin_url``'s server and compare row counts.

    The scratch database is dropped afterwards, whatever happened. Never raises for a bad backup:
    the :class:`Verification` says what was wrong.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        manifest = await check_checksum(dump)
    except BackupError as exc:
        log(f"backup {dump.name} verification FAILED: {exc}")
        return Verification(ok=False, verified_at=now, error=str(exc))
    scratch = f"gradeflow_verify_{uuid.uuid4().hex[:12]}"
    scratch_url = with_database(admin_url, scratch)
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        tools = find_pg_tools(await _server_version(admin_url), bin_dir)
        await run_tool([tools.path("pg_restore"), *RESTORE_ARGS, f"--dbname={scratch}", str(dump)],
                       pg_env(scratch_url), "pg_restore")
        async with await psycopg.AsyncConnection.connect(scratch_url, autocommit=True) as conn:
            found = await table_counts(conn)
        error = None
    except BackupError as exc:
        found, error = {}, str(exc)
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    mismatches = compare_counts(manifest.get("tables") or {}, found) if error is None else {}
    result = Verification(ok=error is None and not mismatches, verified_at=now, tables=len(found),
                          rows=sum(found.values()), mismatches=mismatches, error=error)
    if result.ok:
        log(f"backup {dump.name} verified: restored into a scratch database, {result.tables} tables and "
            f"{result.rows} rows as in its manifest")
    else:
        log(f"backup {dump.name} verification FAILED: {error or f'row counts differ: {mismatches}'}")
    return result


async def _ensure_database(url: str) -> bool:
    """Create the database ``url`` names if it does not exist; return whether it was created."""
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True):
            return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise
    name = database_name(url)
    async with await psycopg.AsyncConnection.connect(with_database(url, "postgres"), autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


async def restore_backup(dump: Path, target_url: str, *, force: bool = False, app_password: str | None = None,
                         bin_dir: Path | None = None, log: Callable[[str], None] = logger.info) -> RestoreResult:
    """Restore ``dump`` into the database of ``target_url`` (an owner or superuser URL).

    Args:
        dump: the ``.dump`` file (its manifest beside it).
        target_url: the database to restore into; created if it does not exist.
        force: restore into a database that holds objects (those of the dump are replaced).
        app_password: password of the ``gradeflow_app`` role, created (or updated) before the restore so
            the dump's grants apply; ``None`` leaves roles alone.
        bin_dir: folder of ``pg_restore``.
        log: receives one line per step.

    Raises:
        BackupError: damaged dump, missing tool or failed restore (nothing is left half-restored: one
            transaction).
        NotEmptyError: the database holds objects and ``force`` is not set.

    """
    from infra.db.migrate import _ensure_app_role

    manifest = await check_checksum(dump)
    created = await _ensure_database(target_url)
    name = database_name(target_url)
    async with await psycopg.AsyncConnection.connect(target_url, autocommit=True) as conn:
        objects = int(((await (await conn.execute(OBJECTS_SQL)).fetchone()) or [0])[0])
        if objects and not force:
            raise NotEmptyError(f"database {name} is not empty ({objects} tables, views or sequences); "
                                "restore into an empty database, or pass --force to replace what the dump holds")
        if app_password is not None:
            await _ensure_app_role(conn, app_password)
    tools = find_pg_tools(await _server_version(target_url), bin_dir)
    extra = ["--clean", "--if-exists"] if objects else []
    log(f"restoring {dump.name} ({manifest.get('created_at')}, {manifest.get('rows')} rows) into {name}"
        + (" (replacing its objects)" if extra else ""))
    await run_tool([tools.path("pg_restore"), *RESTORE_ARGS, *extra, f"--dbname={name}", str(dump)],
                   pg_env(target_url), "pg_restore")
    async with await psycopg.AsyncConnection.connect(target_url, autocommit=True) as conn:
        found = await table_counts(conn)
    result = RestoreResult(name, found, compare_counts(manifest.get("tables") or {}, found), created)
    log(f"restored {dump.name} into {name}: {len(found)} tables, {sum(found.values())} rows"
        + (f"; differs from the manifest: {result.mismatches}" if result.mismatches else ", as in its manifest"))
    return result
