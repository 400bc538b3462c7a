"""SQL of ``score_history``: every change of one question's score, written in the change's transaction.

Writers call :func:`record_changes` on the connection of the transaction that changes
``grading_results`` (agent grading and regrades in :func:`infra.stores.grading.save_results`, the
review saga in :mod:`infra.stores.review`, reviewer scores applied by the grading workflow), so a
change and its history row commit together or not at all. A row is written only when the score
actually changes (``old`` differs from ``new``); a question's first grade has ``old = None``.
:func:`load_history` pages a submission's rows in the order they were written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from infra.db.pools import PoolManager

Source = Literal["agent", "review", "regrade", "request"]
"""What changed a score: the agent's first grade, a reviewer, a regrade, an accepted regrade request."""

INSERT_HISTORY_SQL = """
INSERT INTO score_history (tenant_id, submission_id, question_id, old_score, new_score, source, actor_id, reason,
                           rubric_version, submission_version, trace_id)
VALUES (%(tenant_id)s, %(submission_id)s, %(question_id)s, %(old_score)s, %(new_score)s, %(source)s, %(actor_id)s,
        %(reason)s, %(rubric_version)s, %(submission_version)s, %(trace_id)s)"""
SELECT_HISTORY_SQL = """
SELECT id, question_id, old_score, new_score, source, actor_id, reason, rubric_version, submission_version,
       trace_id, created_at
  FROM score_history WHERE submission_id = %(submission_id)s AND id > %(after)s
 ORDER BY id LIMIT %(limit)s"""
SCORES_SQL = "SELECT question_id, score, rubric_version FROM grading_results WHERE submission_id = %s"


@dataclass(frozen=True)
class ScoreChange:
    """One question's score before and after a change."""

    question_id: str
    old: float | None
    """Score before (``None``: the question had no result)."""
    new: float
    rubric_version: int | None = None
    """Rubric version the new score was graded against (``None``: not a grading, e.g. a reviewer's score)."""


def _num(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


async def current_scores(conn: Any, submission_id: str) -> dict[str, tuple[float, int]]:
    """question_id -> (score, rubric version) of a submission's stored results, inside the caller's transaction."""
    rows = await (await conn.execute(SCORES_SQL, (submission_id,))).fetchall()
    return {r["question_id"]: (float(r["score"]), int(r["rubric_version"])) for r in rows}


def changes_between(before: Mapping[str, tuple[float, int]],
                    after: Mapping[str, tuple[float, int]]) -> list[ScoreChange]:
    """The questions whose score differs between two :func:`current_scores` reads, in question order."""
    out = []
    for qid in sorted(after):
        new, version = after[qid]
        old = before.get(qid)
        if old is None or old[0] != new:
            out.append(ScoreChange(qid, None if old is None else old[0], new, version))
    return out


async def record_changes(conn: Any, *, tenant_id: str, submission_id: str, changes: list[ScoreChange],
                         source: Source, submission_version: int, actor_id: str | None = None,
                         reason: str | None = None, trace_id: str | None = None) -> int:
    """Insert one history row per change whose score differs, on the caller's open transaction.

    Returns:
        Rows written.

    """
    rows = [{"tenant_id": tenant_id, "submission_id": submission_id, "question_id": c.question_id,
             "old_score": c.old, "new_score": c.new, "source": source, "actor_id": actor_id, "reason": reason,
             "rubric_version": c.rubric_version, "submission_version": submission_version, "trace_id": trace_id}
            for c in changes if c.old is None or float(c.old) != float(c.new)]
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(INSERT_HISTORY_SQL, rows)
    return len(rows)


async def load_history(pools: PoolManager, tenant_id: str, submission_id: str, *, after: int = 0,
                       limit: int = 100) -> list[dict[str, Any]]:
    """A submission's history rows with ``id > after``, oldest first, at most ``limit`` (JSON-friendly)."""
    async with pools.transaction(tenant_id) as conn:
        rows = await (await conn.execute(SELECT_HISTORY_SQL, {
            "submission_id": submission_id, "after": after, "limit": limit})).fetchall()
    return [{**r, "old_score": _num(r["old_score"]), "new_score": _num(r["new_score"]),
             "created_at": r["created_at"].isoformat()} for r in rows]
