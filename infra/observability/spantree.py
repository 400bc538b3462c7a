"""A stored trace as a tree: each span under its parent, with its duration and offset from the start.

:func:`build_tree` turns ``trace_spans`` rows into :class:`SpanNode` trees (children by start time).
A span whose parent was not stored (a remote caller's span, a span another tenant owns, one dropped
while PostgreSQL was down) becomes a root of its own, marked ``orphan`` unless it never had a parent.
:func:`render_tree` prints it for ``gradeflow trace <id>``; ``GET /v1/traces/{id}`` returns
:meth:`SpanNode.to_dict`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class SpanNode:
    """One span and the spans under it."""

    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    started_at: datetime
    duration_ms: float
    status: str
    tenant_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    orphan: bool = False
    """Its parent is not among the stored spans (it has one, elsewhere)."""
    children: list[SpanNode] = field(default_factory=list)

    def to_dict(self, start: datetime | None = None) -> dict[str, Any]:
        """JSON shape: the span, its offset from ``start`` (ms) and its children, recursively."""
        start = start or self.started_at
        return {
            "span_id": self.span_id, "parent_span_id": self.parent_span_id, "name": self.name,
            "service": self.service, "started_at": self.started_at.isoformat(),
            "offset_ms": round((self.started_at - start).total_seconds() * 1000, 3),
            "duration_ms": round(self.duration_ms, 3), "status": self.status, "tenant_id": self.tenant_id,
            "orphan": self.orphan, "attributes": self.attributes,
            "children": [child.to_dict(start) for child in self.children],
        }


def build_tree(rows: Iterable[Mapping[str, Any]]) -> list[SpanNode]:
    """The roots of the spans in ``rows`` (``trace_spans`` rows of one trace), oldest first."""
    nodes = {row["span_id"]: SpanNode(
        span_id=row["span_id"], parent_span_id=row.get("parent_span_id"), name=row["name"],
        service=row.get("service", ""), started_at=row["started_at"], duration_ms=float(row["duration_ms"]),
        status=row.get("status", "ok"), tenant_id=row.get("tenant_id"), attributes=dict(row.get("attributes") or {}),
    ) for row in rows}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.parent_span_id or "")
        if parent is None or parent is node:
            node.orphan = node.parent_span_id is not None
            roots.append(node)
        else:
            parent.children.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.started_at, n.name))
    return sorted(roots, key=lambda n: (n.started_at, n.name))


def trace_summary(roots: list[SpanNode]) -> dict[str, Any]:
    """Span count, start, end-to-end duration and error count of a forest."""
    spans = list(_walk(roots))
    if not spans:
        return {"span_count": 0, "started_at": None, "duration_ms": 0.0, "errors": 0}
    start = min(s.started_at for s in spans)
    end = max(s.started_at.timestamp() * 1000 + s.duration_ms for s in spans)
    return {"span_count": len(spans), "started_at": start.isoformat(),
            "duration_ms": round(end - start.timestamp() * 1000, 3),
            "errors": sum(1 for s in spans if s.status == "error")}


def _walk(nodes: list[SpanNode]) -> Iterable[SpanNode]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def render_tree(trace_id: str, roots: list[SpanNode]) -> str:
    """The forest as indented text: ``+offset  duration  name [service] (status)`` per span."""
    summary = trace_summary(roots)
    if not roots:
        return f"trace {trace_id}: no spans stored"
    lines = [f"trace {trace_id}: {summary['span_count']} spans, {summary['duration_ms']:.1f} ms, "
             f"{summary['errors']} error(s), started {summary['started_at']}"]
    start = min(root.started_at for root in roots)

    def add(node: SpanNode, prefix: str, last: bool, top: bool) -> None:
        offset = (node.started_at - start).total_seconds() * 1000
        branch = "" if top else ("└─ " if last else "├─ ")
        flags = (" ERROR" if node.status == "error" else "") + (" (parent not stored)" if node.orphan else "")
        lines.append(f"{offset:>+10.1f} ms {node.duration_ms:>10.1f} ms  {prefix}{branch}{node.name} "
                     f"[{node.service}]{flags}")
        below = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(node.children):
            add(child, below, i == len(node.children) - 1, False)

    for root in roots:
        add(root, "", True, True)
    return "\n".join(lines)
