"""Checkpoint threads of each submission (``checkpoint_threads``) and their retention.

The grading activities record every LangGraph thread a submission's gradings wrote to: the workflow
run id when a run loads its context (the agent's first thread), and the thread the agent finished on
when the result is persisted (a ``<run_id>:fresh-<n>`` thread after a corrupt checkpoint). Once the
submission is final, the hourly maintenance run prunes those threads to their last checkpoint after
``Settings.checkpoint_retention_hours`` and deletes them after ``checkpoint_delete_after_hours``,
through ``prune_checkpoint_threads`` (``migrations/0010_checkpoint_retention.sql``) in bounded chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

RECORD_THREAD_SQL = """
INSERT INTO checkpoint_threads (thread_id, tenant_id, submission_id) VALUES (%s, %s, %s)
ON CONFLICT (thread_id) DO NOTHING"""
PRUNE_SQL = "SELECT * FROM prune_checkpoint_threads(%s, %s, %s)"
THREAD_BYTES_SQL = """
SELECT
  (SELECT count(*) FROM checkpoints WHERE thread_id = ANY(%(t)s)) AS checkpoints,
  (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)
     FROM checkpoints WHERE thread_id = ANY(%(t)s)) AS checkpoint_bytes,
  (SELECT count(*) FROM checkpoint_blobs WHERE thread_id = ANY(%(t)s)) AS blobs,
  (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = ANY(%(t)s)) AS blob_bytes,
  (SELECT count(*) FROM checkpoint_writes WHERE thread_id = ANY(%(t)s)) AS writes,
  (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = ANY(%(t)s)) AS write_bytes
"""
SUBMISSION_THREADS_SQL = "SELECT thread_id FROM checkpoint_threads WHERE submission_id = %s ORDER BY thread_id"

Conn = psycopg.AsyncConnection[dict[str, Any]]


@dataclass
class RetentionChunk:
    """What one call of ``prune_checkpoint_threads`` did."""

    threads_deleted: int = 0
    """Threads whose checkpoints were all deleted."""
    threads_pruned: int = 0
    """Threads cut down to their last checkpoint."""
    rows_deleted: int = 0
    """Checkpoint, blob and write rows deleted."""


async def record_thread(conn: Conn, *, tenant_id: str, submission_id: str, thread_id: str) -> None:
    """Remember that ``thread_id`` holds checkpoints of ``submission_id`` (idempotent; tenant transaction)."""
    if thread_id:
        await conn.execute(RECORD_THREAD_SQL, (thread_id, tenant_id, submission_id))


async def prune_chunk(conn: Conn, *, prune_after_hours: float, delete_after_hours: float,
                      limit: int) -> RetentionChunk:
    """One bounded chunk of retention work, in the caller's transaction (no tenant needed)."""
    row = await (await conn.execute(PRUNE_SQL, (prune_after_hours, delete_after_hours, limit))).fetchone()
    return RetentionChunk(**{k: int(v) for k, v in (row or {}).items()})


async def submission_threads(conn: Conn, submission_id: str) -> list[str]:
    """The checkpoint threads recorded for a submission (tenant transaction)."""
    rows = await (await conn.execute(SUBMISSION_THREADS_SQL, (submission_id,))).fetchall()
    return [row["thread_id"] for row in rows]


async def thread_bytes(conn: Conn, thread_ids: list[str]) -> dict[str, int]:
    """Rows and logical bytes (JSON text, blobs, writes) the checkpoint tables hold for these threads."""
    row = await (await conn.execute(THREAD_BYTES_SQL, {"t": thread_ids})).fetchone()
    out = {k: int(v) for k, v in (row or {}).items()}
    out["total_bytes"] = out.get("checkpoint_bytes", 0) + out.get("blob_bytes", 0) + out.get("write_bytes", 0)
    return out
