"""Reading stored traces (``trace_spans``): a tenant's own spans, or a whole trace for operators.

A tenant reads under row-level security (:meth:`~infra.db.pools.PoolManager.transaction`): its own
spans only (the request, workflow, activity and node spans of its gradings carry its tenant; system
spans do not). Operators (``gradeflow trace``) read every span of the trace through the narrow
``SECURITY DEFINER`` function ``trace_spans_find`` (``migrations/0011_observability.sql``).
"""

from __future__ import annotations

import re
from typing import Any

from infra.db.pools import PoolManager
from infra.observability.spantree import SpanNode, build_tree

TENANT_SPANS_SQL = """
SELECT span_id, trace_id, parent_span_id, tenant_id, name, service, started_at, duration_ms, status, attributes
  FROM trace_spans WHERE trace_id = %(trace_id)s ORDER BY started_at, span_id LIMIT %(limit)s
"""
OPERATOR_SPANS_SQL = "SELECT * FROM trace_spans_find(%(trace_id)s, %(limit)s)"
MAX_SPANS = 10_000
"""Spans read for one trace at most (a batch of 100 gradings is about 3 000)."""
TRACE_ID = re.compile(r"[0-9a-f]{32}")


def normalise_trace_id(trace_id: str) -> str | None:
    """The 32-lower-hex form of ``trace_id`` (hyphens and case ignored), or ``None`` if it is not one."""
    candidate = trace_id.strip().lower().replace("-", "")
    return candidate if TRACE_ID.fullmatch(candidate) and int(candidate, 16) else None


async def load_trace(pools: PoolManager, trace_id: str, *, tenant_id: str | None,
                     limit: int = MAX_SPANS) -> list[SpanNode]:
    """The span tree of ``trace_id``: ``tenant_id``'s spans, or every span when ``tenant_id`` is ``None``."""
    params: dict[str, Any] = {"trace_id": trace_id, "limit": limit}
    if tenant_id is None:
        async with pools.connection() as conn:
            rows = await (await conn.execute(OPERATOR_SPANS_SQL, params)).fetchall()
    else:
        async with pools.transaction(tenant_id) as conn:
            rows = await (await conn.execute(TENANT_SPANS_SQL, params)).fetchall()
    return build_tree(rows)
