"""Backups against a real PostgreSQL: dump, verify, drop the database, restore, and the running platform serves
the same submissions, grades and audit rows; the nightly workflow backs up, verifies and prunes.

Each test works on a throwaway database of its own (the session's shared database is never dropped).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from temporalio.worker import Worker

from activities.backup import BackupActivities
from agents.checkpointer import open_saver
from api.app import create_app
from infra.cache.keys import submission_key
from infra.db.backup import read_manifest, sha256_of, write_manifest
from infra.db.migrate import app_url_from_admin, migrate
from infra.db.pools import PoolManager
from infra.db.restore import verify_backup
from infra.settings import Settings
from infra.temporal.schedules import ensure_backup_schedule
from tests.conftest import APP_PASSWORD
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import grading_workers
from workflows.backup import BackupWorkflow, BackupWorkflowInput

ROOT = Path(__file__).resolve().parents[4]
AUDIT_SQL = """
SELECT submission_id::text, question_id, actor_id, action, before, after, reason FROM review_log
 WHERE tenant_id = %s ORDER BY id"""


class Throwaway:
    """A migrated database of the test's own on the session's server."""

    def __init__(self, server_admin_url: str) -> None:
        self.name = f"gf_backup_{uuid.uuid4().hex[:10]}"
        self.server_admin_url = server_admin_url
        self.admin_url = server_admin_url.rsplit("/", 1)[0] + f"/{self.name}"
        self.app_url = app_url_from_admin(self.admin_url, APP_PASSWORD)

    async def sql(self, statement: sql.Composable | str) -> None:
        async with await psycopg.AsyncConnection.connect(self.server_admin_url, autocommit=True) as conn:
            await conn.execute(statement)

    async def drop(self) -> None:
        await self.sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))


@pytest.fixture(autouse=True)
def _session_tracing(services: Any) -> None:
    """Install the process's span exporter on the session database before an app of a throwaway one starts.

    OpenTelemetry's provider is process-wide and the first ``setup_tracing`` wins: were it this test's
    app, every later test's spans would go to a database this test drops.
    """
    from infra.observability.tracing import setup_tracing

    setup_tracing(Settings(database_url=services.app_url, env="test"), "gradeflow-tests")


@pytest.fixture
async def throwaway(pg_admin_url: str) -> AsyncIterator[Throwaway]:
    db = Throwaway(pg_admin_url)
    await db.sql(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    try:
        await migrate(db.admin_url, app_password=APP_PASSWORD, log=lambda line: None)
        yield db
    finally:
        await db.drop()


def _gradeflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


async def _until(check: Any, what: str, tries: int = 600) -> Any:
    for _ in range(tries):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_backup_drop_restore_and_the_running_platform_serves_the_same_rows(
        throwaway, services, temporal_client, task_queue, tenant_id, tmp_path):
    settings = Settings(database_url=throwaway.app_url, database_admin_url=throwaway.admin_url,
                        redis_url=services.redis_url, temporal_address=services.temporal_address, env="test",
                        backup_dir=tmp_path)
    env = {**services.env(), "GRADEFLOW_DATABASE_URL": throwaway.app_url,
           "GRADEFLOW_DATABASE_ADMIN_URL": throwaway.admin_url, "GRADEFLOW_BACKUP_DIR": str(tmp_path)}
    from infra.security.tokens import mint_token

    headers = {"Authorization": f"Bearer {mint_token(settings, tenant=tenant_id, roles=['admin'], sub='ops-1')}"}
    pools = PoolManager(throwaway.app_url, services.redis_url, min_size=1, max_size=4, acquire_timeout=5)
    await pools.open()
    ckpt = AsyncConnectionPool(throwaway.app_url, min_size=1, max_size=2, open=False,
                               kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    await ckpt.open()
    app = create_app(settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
    try:
        async with open_saver(ckpt) as saver, grading_workers(temporal_client, pools, saver, settings, task_queue), \
                running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as api:
            exam = (await api.post("/v1/exams", json=exam_body(), headers=headers)).json()
            sids = []
            for n in range(3):
                accepted = await api.post("/v1/submissions", headers=headers, json={
                    "exam_id": exam["id"], "student_id": f"s-{n}", "answers": GOOD_ANSWERS})
                assert accepted.status_code == 202, accepted.text
                sids.append(accepted.json()["submission_id"])
            for sid in sids:
                async def done(sid: str = sid) -> bool:
                    view = (await api.get(f"/v1/submissions/{sid}", headers=headers)).json()
                    return view["status"] in ("completed", "needs_review")
                await _until(done, f"{sid} graded")
            override = await api.post(f"/v1/submissions/{sids[0]}/review", headers=headers, json={
                "overrides": {"q4": {"score": 4, "feedback": "Fine essay."}}, "reason": "second marker"})
            assert override.status_code == 200, override.text

            async def snapshot() -> dict[str, Any]:
                for sid in sids:  # read PostgreSQL, not Redis: the copies would hide a bad restore
                    await pools.redis.delete(submission_key(tenant_id, sid))
                views = {sid: (await api.get(f"/v1/submissions/{sid}", headers=headers)).json() for sid in sids}
                listing = (await api.get("/v1/submissions", params={"sort_by": "created_at"}, headers=headers)).json()
                async with pools.transaction(tenant_id) as conn:
                    audit = await (await conn.execute(AUDIT_SQL, (tenant_id,))).fetchall()
                return {"views": views, "listing": listing, "audit": audit}

            before = await snapshot()
            assert [a["action"] for a in before["audit"]] and all(len(v["results"]) == 4
                                                                 for v in before["views"].values())

            made = await asyncio.to_thread(_gradeflow, env, "backup")
            assert made.returncode == 0, made.stderr + made.stdout
            [dump] = sorted(tmp_path.glob("gradeflow-*.dump"))
            manifest = read_manifest(dump)
            assert manifest["verification"]["ok"] is True and not manifest["verification"]["mismatches"]
            assert manifest["sha256"] == sha256_of(dump)
            assert (tmp_path / f"{dump.name}.sha256").read_text().split() == [manifest["sha256"], dump.name]
            assert manifest["tables"]["public.submissions"] == 3 and manifest["tables"]["public.review_log"] >= 1
            assert manifest["tables"]["public.checkpoints"] > 0 and "verified" in made.stdout

            await throwaway.drop()  # the database is gone under the running platform
            restored = await asyncio.to_thread(_gradeflow, env, "restore", str(dump))
            assert restored.returncode == 0, restored.stderr + restored.stdout
            assert "as in its manifest" in restored.stdout

            async def served() -> dict[str, Any] | None:
                try:
                    return await snapshot()
                except (psycopg.OperationalError, KeyError):  # pooled connections to the dropped database
                    return None

            after = await _until(served, "the API serving again after the restore")
            assert after == before

            # The platform goes on working on the restored database (the application role's grants came back).
            accepted = await api.post("/v1/submissions", headers=headers, json={
                "exam_id": exam["id"], "student_id": "s-after", "answers": GOOD_ANSWERS})
            assert accepted.status_code == 202, accepted.text
            new = accepted.json()["submission_id"]

            async def graded() -> bool:
                return (await api.get(f"/v1/submissions/{new}", headers=headers)).json()["status"] in (
                    "completed", "needs_review")

            await _until(graded, "a new submission graded on the restored database")

        refused = await asyncio.to_thread(_gradeflow, env, "restore", str(dump))
        assert refused.returncode == 2 and "is not empty" in refused.stderr
        forced = await asyncio.to_thread(_gradeflow, env, "restore", str(dump), "--force")
        assert forced.returncode == 0, forced.stderr + forced.stdout
        async with pools.transaction(tenant_id) as conn:
            count = await (await conn.execute("SELECT count(*) AS n FROM submissions")).fetchone()
        assert count is not None and count["n"] == 3  # back to the backup's rows
    finally:
        await ckpt.close()
        await pools.close()


async def test_a_damaged_or_different_backup_fails_verification_and_restore(throwaway, services, tmp_path):
    env = {**services.env(), "GRADEFLOW_DATABASE_ADMIN_URL": throwaway.admin_url,
           "GRADEFLOW_DATABASE_URL": throwaway.app_url}
    made = await asyncio.to_thread(_gradeflow, env, "backup", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    [dump] = sorted(tmp_path.glob("gradeflow-*.dump"))

    manifest = read_manifest(dump)
    manifest["tables"]["public.schema_migrations"] += 1  # the dump holds fewer rows than the manifest says
    write_manifest(dump, manifest)
    different = await verify_backup(throwaway.admin_url, dump)
    assert not different.ok and list(different.mismatches) == ["public.schema_migrations"]
    expected = manifest["tables"]["public.schema_migrations"]
    assert different.mismatches["public.schema_migrations"] == [expected, expected - 1]

    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    damaged = await verify_backup(throwaway.admin_url, dump)
    assert not damaged.ok and "checksum mismatch" in (damaged.error or "")
    target = f"{throwaway.name}_r"
    refused = await asyncio.to_thread(_gradeflow, env, "restore", str(dump), "--database-url",
                                      throwaway.admin_url.rsplit("/", 1)[0] + f"/{target}")
    assert refused.returncode == 1 and "checksum mismatch" in refused.stderr


async def test_the_nightly_workflow_backs_up_verifies_and_prunes(throwaway, services, temporal_client, task_queue,
                                                                 tmp_path):
    settings = Settings(database_url=throwaway.app_url, database_admin_url=throwaway.admin_url, env="test",
                        backup_dir=tmp_path, backup_retention_days=30)
    old = tmp_path / "gradeflow-old-20200101T023000Z.dump"
    old.write_bytes(b"old")
    (tmp_path / f"{old.name}.sha256").write_text("x")
    write_manifest(old, {"verification": {"ok": True}})
    recent_stamp = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y%m%dT%H%M%SZ")
    recent = tmp_path / f"gradeflow-recent-{recent_stamp}.dump"
    recent.write_bytes(b"recent")
    write_manifest(recent, {"verification": {"ok": True}})

    schedule_id = f"test-backup-{uuid.uuid4()}"
    await ensure_backup_schedule(temporal_client, at="03:15", task_queue=task_queue, schedule_id=schedule_id)
    await ensure_backup_schedule(temporal_client, at="04:05", task_queue=task_queue, schedule_id=schedule_id)
    handle = temporal_client.get_schedule_handle(schedule_id)
    try:
        [calendar] = (await handle.describe()).schedule.spec.calendars
        assert ([r.start for r in calendar.hour], [r.start for r in calendar.minute]) == ([4], [5])
    finally:
        await handle.delete()

    async with Worker(temporal_client, task_queue=task_queue, workflows=[BackupWorkflow],
                      activities=[BackupActivities(settings).run_backup]):
        out = await temporal_client.execute_workflow(BackupWorkflow.run, BackupWorkflowInput(reason="test"),
                                                     id=f"backup-{uuid.uuid4()}", task_queue=task_queue)
    assert out.verified is True and out.rows > 0
    assert read_manifest(Path(out.path))["verification"]["ok"] is True
    assert out.pruned == [str(old)]
    assert not old.exists() and not (tmp_path / f"{old.name}.sha256").exists()
    assert recent.exists()  # within the retention
