"""``gradeflow retry``: one line per outcome, never a traceback; the retry is audited and a new run starts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import psycopg

from tests.integration.workflows.harness import choice, seed

SET_STATUS_SQL = "UPDATE submissions SET status = %s, error = %s WHERE id = %s"


def _retry(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", "retry", *args], env=env, capture_output=True,
                          text=True, timeout=120)


async def test_gradeflow_retry_refuses_clearly_and_retries_a_needs_intervention_submission(
        services, pools, pg_admin_url, temporal_client, tenant_id):
    env = services.env()
    missing = await asyncio.to_thread(_retry, env, str(uuid.uuid4()), "--tenant", tenant_id, "--reason", "x")
    assert missing.returncode == 1 and "no submission" in missing.stderr and "Traceback" not in missing.stderr

    s = await seed(pools, tenant_id, [choice("q1"), choice("q2")], {"q1": "a", "q2": "b"})
    queued = await asyncio.to_thread(_retry, env, s.submission_id, "--tenant", tenant_id, "--reason", "x")
    assert queued.returncode == 1 and "queued" in queued.stderr and "Traceback" not in queued.stderr

    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        await conn.execute(SET_STATUS_SQL, ("needs_intervention", "CheckpointWriteError: injected", s.submission_id))
    # No worker serves the default queues in the test session: the new run waits there; it is
    # started (and audited), which is what the CLI answers for.
    done = await asyncio.to_thread(_retry, env, s.submission_id, "--tenant", tenant_id, "--reason", "store fixed",
                                   "--actor", "ops-7")
    assert done.returncode == 0, done.stderr
    assert f"retry of {s.submission_id} started: workflow grade-{s.submission_id}" in done.stdout
    async with pools.transaction(tenant_id) as conn:
        audit = await (await conn.execute("SELECT actor_id, reason FROM review_log WHERE submission_id = %s",
                                          (s.submission_id,))).fetchall()
    assert [(a["actor_id"], a["reason"]) for a in audit] == [("ops-7", "store fixed")]
    await temporal_client.get_workflow_handle(f"grade-{s.submission_id}").terminate("test over")
