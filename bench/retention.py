"""Checkpoint retention benchmark: checkpoint bytes retained per final submission vs bytes written grading it.

For every final (``completed``/``failed``) submission with recorded checkpoint threads, the bytes its
threads hold right after grading are measured ("written": the saver only inserts, so what is stored
is what was written), then retention is applied exactly as the hourly maintenance run applies it —
``prune_checkpoint_threads`` with the configured hours, the submissions made old enough by moving
their ``updated_at`` back — and measured again: after pruning to the last checkpoint, and after the
delete setting. All of it runs in one transaction that is rolled back, so the database is unchanged.

Bytes are logical (``octet_length`` of the checkpoint and metadata JSON, of every blob and write),
like :mod:`bench.checkpointer`. With the e2e part run, the submissions are the ones it graded through
the real platform; without it, ``n`` submissions of the benchmark exam are graded here by the same
graph and saver (no Temporal) in a database of their own.
"""

from __future__ import annotations

import json
import statistics
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

THREADS_SQL = """
SELECT c.submission_id::text AS submission_id, c.thread_id
  FROM checkpoint_threads c JOIN submissions s ON s.id = c.submission_id
 WHERE s.status IN ('completed', 'failed') AND c.pruned_at IS NULL AND c.deleted_at IS NULL
 ORDER BY c.submission_id, c.thread_id"""
BACKDATE_SQL = "UPDATE submissions SET updated_at = now() - %s * interval '1 hour' WHERE id = ANY(%s::uuid[])"
PRUNE_SQL = "SELECT * FROM prune_checkpoint_threads(%s, %s, %s)"
INSERT_TENANT_SQL = "INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, 'retention bench')"
INSERT_SUBMISSION_SQL = """
INSERT INTO submissions (id, tenant_id, exam_id, student_id, status, workflow_id, trace_id)
VALUES (%s, %s, %s, %s, 'completed', %s, %s)"""
INSERT_THREAD_SQL = "INSERT INTO checkpoint_threads (thread_id, tenant_id, submission_id) VALUES (%s, %s, %s)"
TENANT = "bench-retention"


async def _submission_bytes(conn: psycopg.AsyncConnection[Any], threads: dict[str, list[str]]) -> dict[str, int]:
    from infra.stores.checkpoints import thread_bytes

    return {sid: (await thread_bytes(conn, ts))["total_bytes"] for sid, ts in threads.items()}


async def _prune(conn: psycopg.AsyncConnection[Any], retention: float, delete_after: float) -> None:
    while True:
        row = await (await conn.execute(PRUNE_SQL, (retention, delete_after, 1000))).fetchone()
        if row is None or (row["threads_pruned"] < 1000 and row["threads_deleted"] < 1000):
            return


async def measure_retention(admin_url: str, *, retention_hours: float, delete_after_hours: float,
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Apply retention to the final submissions of ``admin_url``'s database (rolled back) and measure it."""
    async with await psycopg.AsyncConnection.connect(admin_url, row_factory=dict_row) as conn:
        threads: dict[str, list[str]] = {}
        for row in await (await conn.execute(THREADS_SQL)).fetchall():
            threads.setdefault(row["submission_id"], []).append(row["thread_id"])
        if not threads:
            raise RuntimeError("no final submission with recorded checkpoint threads")
        ids = list(threads)
        written = await _submission_bytes(conn, threads)
        await conn.execute(BACKDATE_SQL, (retention_hours + 1, ids))
        await _prune(conn, retention_hours, delete_after_hours)
        pruned = await _submission_bytes(conn, threads)
        await conn.execute(BACKDATE_SQL, (delete_after_hours + 1, ids))
        await _prune(conn, retention_hours, delete_after_hours)
        deleted = await _submission_bytes(conn, threads)
        await conn.rollback()
    total_written, total_pruned = sum(written.values()), sum(pruned.values())
    ratio = round(total_pruned / total_written, 4) if total_written else None
    log(f"retention: {len(ids)} final submissions; {statistics.median(written.values()):.0f} bytes written "
        f"(median), {statistics.median(pruned.values()):.0f} retained after pruning to the last checkpoint "
        f"(ratio {ratio}), {sum(deleted.values())} after the delete setting")
    return {
        "submissions": len(ids),
        "threads": sum(len(t) for t in threads.values()),
        "written_bytes_per_submission_median": statistics.median(written.values()),
        "retained_bytes_per_submission_median": statistics.median(pruned.values()),
        "retained_bytes_after_delete_total": sum(deleted.values()),
        "checkpoint_retained_ratio": ratio,
        "retention_hours": retention_hours,
        "delete_after_hours": delete_after_hours,
        "note": "retained = after pruning to the last checkpoint (checkpoint_retention_hours); 0 after "
                "checkpoint_delete_after_hours",
    }


async def grade_standalone(admin_url: str, *, n: int, log: Callable[[str], None] = print) -> None:
    """Grade ``n`` benchmark submissions with the real graph and saver (no Temporal) and record their threads.

    ``admin_url``'s database must be migrated (the retention function and ``checkpoint_threads``).
    """
    from agents.checkpointer import GradeflowSaver
    from agents.context import GradingContext
    from agents.graph import build_grading_graph
    from agents.rubric import rubric_hash
    from bench.workload import answers_for, exam_questions

    questions = exam_questions()
    exam_id = str(uuid.uuid4())
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(INSERT_TENANT_SQL, (TENANT, TENANT))
        await conn.execute(INSERT_EXAM_SQL, (exam_id, TENANT))
        for pos, q in enumerate(questions):
            await conn.execute(
                "INSERT INTO questions (exam_id, question_id, tenant_id, position, type, prompt, max_points) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)", (exam_id, q.id, TENANT, pos, q.type.value, q.prompt,
                                                       q.max_points))
            await conn.execute(
                "INSERT INTO rubric_versions (exam_id, question_id, version, tenant_id, rubric, rubric_hash) "
                "VALUES (%s, %s, 1, %s, %s, %s)",
                (exam_id, q.id, TENANT, json.dumps(q.rubric.model_dump(mode="json")), rubric_hash(q)))
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        admin_url, min_size=1, max_size=2, open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    await pool.open()
    try:
        graph = build_grading_graph(GradeflowSaver(pool))
        for i in range(n):
            sid, thread = str(uuid.uuid4()), str(uuid.uuid4())
            ctx = GradingContext(sid, TENANT, uuid.uuid4().hex, questions=questions, answers=answers_for(questions,
                                                                                                       seed=i))
            await graph.ainvoke({}, {"configurable": {"thread_id": thread}}, context=ctx)
            async with pool.connection() as conn:
                await conn.execute(INSERT_SUBMISSION_SQL, (sid, TENANT, exam_id, f"s-{i}", f"grade-{sid}",
                                                           ctx.trace_id))
                await conn.execute(INSERT_THREAD_SQL, (thread, TENANT, sid))
    finally:
        await pool.close()
    log(f"retention: graded {n} benchmark submissions with the grading graph (standalone)")
