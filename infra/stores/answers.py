"""A submission's stored answers, as the dashboard shows them beside their questions and grades.

The intake SQL that writes answers lives in :mod:`infra.stores.submissions`; this module only reads
them back (PostgreSQL, under the caller's tenant), with the submitter so the API can apply its
read rule.
"""

from __future__ import annotations

from typing import Any

from infra.db.pools import PoolManager
from infra.stores.exams import parse_uuid

SELECT_OWNER_SQL = "SELECT submitted_by FROM submissions WHERE id = %s"
SELECT_ANSWERS_SQL = "SELECT question_id, answer FROM answers WHERE submission_id = %s ORDER BY question_id"


async def load_answers(pools: PoolManager, tenant_id: str, submission_id: str) -> dict[str, Any] | None:
    """Read a submission's answers.

    Args:
        pools: the process's pool manager.
        tenant_id: the caller's tenant (row-level security hides every other tenant's rows).
        submission_id: the submission's id (any UUID spelling).

    Returns:
        ``{"submitted_by", "answers": {question_id: answer}}``, or ``None`` when the tenant has no
        such submission.

    """
    sid = parse_uuid(submission_id)
    if sid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        owner = await (await conn.execute(SELECT_OWNER_SQL, (sid,))).fetchone()
        if owner is None:
            return None
        rows = await (await conn.execute(SELECT_ANSWERS_SQL, (sid,))).fetchall()
    return {"submitted_by": owner["submitted_by"], "answers": {r["question_id"]: r["answer"] for r in rows}}
