"""Reads of the truth for the chaos suite: PostgreSQL as superuser (RLS hides nothing), the checkpointer.

Every read opens its own short connection, so a PostgreSQL restart never leaves the suite holding a
dead one. :func:`snapshot_fault` records the state at a fault instant, which the re-grading check
needs afterwards: the database clock, which submissions were being graded, and which questions each
grading's checkpoint thread already held (checkpointed grades plus pending writes, decoded with the
platform's own saver), so a question graded again after the fault can be told apart from one that
was still in flight.

Grader calls themselves are read from the worker's test log (``GRADEFLOW_TEST_GRADER_LOG``, one line
``<submission_id> <question_id> <attempt> <unix time>`` per call, written when the grader answers
(before the test grade delay and the checkpoint), with one O_APPEND write that survives a SIGKILL):
``grader_calls`` rows are written in the checkpoint's transaction, so a grade lost with a killed
worker leaves no row.
Each fault instant therefore also records the wall clock (``time.time()``), the clock of those lines.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agents.checkpointer import open_saver

NOW_SQL = "SELECT clock_timestamp() AS now"
STATUSES_SQL = "SELECT id::text AS id, status FROM submissions WHERE tenant_id = %s"
RUNS_SQL = "SELECT DISTINCT submission_id::text AS submission_id, run_id FROM grader_calls WHERE tenant_id = %s"
THREADS_SQL = "SELECT DISTINCT thread_id FROM checkpoints WHERE split_part(thread_id, ':', 1) = ANY(%s)"
FINAL_STATUSES = frozenset({"completed", "needs_review"})
"""Graded: the platform is done (needs_review waits for a human)."""
SETTLED_STATUSES = FINAL_STATUSES | {"needs_intervention", "failed"}
"""Nothing more will happen without an operator."""


class Db:
    """Short-lived superuser connections to the gradeflow database."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    async def fetch(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        """Run one query on a fresh connection; return the rows as dicts."""
        conn = await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True, row_factory=dict_row,
                                                     connect_timeout=3)
        async with conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []

    async def try_fetch(self, query: str, params: Any = None) -> list[dict[str, Any]] | None:
        """Like :meth:`fetch`, ``None`` while PostgreSQL is unreachable."""
        try:
            return await self.fetch(query, params)
        except psycopg.OperationalError:
            return None

    async def statuses(self, tenant: str) -> dict[str, str] | None:
        """Submission id → status for ``tenant`` (``None`` while PostgreSQL is down)."""
        rows = await self.try_fetch(STATUSES_SQL, (tenant,))
        return None if rows is None else {r["id"]: r["status"] for r in rows}



@dataclass(frozen=True)
class GraderCall:
    """One line of the worker's grader log: a grader call (its grade checkpointed or not)."""

    submission_id: str
    question_id: str
    attempt: int
    at: float
    """Unix time (worker's ``time.time()``) of the call, just before the test grade delay."""


class GraderLog:
    """The scenario's grader log, shared by every cognitive worker process (``GRADEFLOW_TEST_GRADER_LOG``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        """Bytes written so far (grows by one line per grader call; 0 before the first)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def calls(self, submissions: set[str] | None = None) -> list[GraderCall]:
        """Every complete line (of ``submissions`` if given), in time order."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines(keepends=True):
            parts = line.split()
            if not line.endswith("\n") or len(parts) != 4:
                continue  # a line being written
            if submissions is not None and parts[0] not in submissions:
                continue
            out.append(GraderCall(parts[0], parts[1], int(parts[2]), float(parts[3])))
        return sorted(out, key=lambda c: c.at)


@dataclass
class FaultSnapshot:
    """The state at one fault instant (a SIGKILL, or the moment before a server is stopped)."""

    label: str
    """What happened, e.g. ``SIGKILL worker-cognitive #2``."""
    at: datetime
    """Database clock at the instant."""
    wall: float = 0.0
    """Unix time (``time.time()``) at the instant: grader log lines are compared with it."""
    killed: str = ""
    """The platform process SIGKILLed at this instant (``worker-cognitive``: grades it had not returned are lost)."""
    kind: str = "fault"
    """``fault`` (a kill or an outage) or ``probe`` (a periodic look, for the checkpoint-lag check only)."""
    grading: list[str] = field(default_factory=list)
    """Submissions in status ``grading``: their agent may have had questions in flight."""
    checkpointed: dict[str, set[str]] = field(default_factory=dict)
    """Submission id → question ids whose grade was in its checkpoint thread(s) at the instant."""

    def to_json(self) -> dict[str, Any]:
        """Compact JSON form (counts, not ids)."""
        return {"label": self.label, "at": self.at.isoformat(), "wall": round(self.wall, 3),
                "grading": len(self.grading), "checkpointed_questions": sum(len(v) for v in self.checkpointed.values())}


def _grade_ids(value: Any) -> set[str]:
    return {str(k) for k in value} if isinstance(value, dict) else set()


async def checkpointed_questions(admin_url: str, runs: dict[str, str]) -> dict[str, set[str]]:
    """Submission id → graded question ids held by the checkpoint threads of ``runs`` (run id → submission)."""
    if not runs:
        return {}
    db = Db(admin_url)
    threads = [r["thread_id"] for r in await db.fetch(THREADS_SQL, (list(runs),))]
    out: dict[str, set[str]] = {}
    async with open_saver(admin_url) as saver:
        for thread in threads:
            tup = await saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
            if tup is None:
                continue
            held = _grade_ids((tup.checkpoint.get("channel_values") or {}).get("grades"))
            for _task, channel, value in tup.pending_writes or []:
                if channel == "grades":
                    held |= _grade_ids(value)
            out.setdefault(runs[thread.split(":", 1)[0]], set()).update(held)
    return out


async def snapshot_fault(admin_url: str, tenant: str, label: str, kind: str = "fault",
                         wall: float | None = None) -> FaultSnapshot:
    """Record the state at a fault instant, or at a probe (PostgreSQL must be up).

    ``wall``: the instant's unix time (e.g. taken right at a SIGKILL); now if not given. Run ids come
    from ``grader_calls`` (a row carries its run id once its grade is checkpointed; a run without a
    row holds no grade in its checkpoint).
    """
    db = Db(admin_url)
    wall = time.time() if wall is None else wall
    now = (await db.fetch(NOW_SQL))[0]["now"]
    statuses, runs = await asyncio.gather(db.fetch(STATUSES_SQL, (tenant,)), db.fetch(RUNS_SQL, (tenant,)))
    grading = [r["id"] for r in statuses if r["status"] == "grading"]
    held = await checkpointed_questions(admin_url, {r["run_id"]: r["submission_id"] for r in runs})
    return FaultSnapshot(label=label, at=now, wall=wall, kind=kind, grading=grading, checkpointed=held)
