"""A stored trace as a span tree: ``GET /v1/traces/{trace_id}`` (admin).

The tree holds the caller's tenant's spans of that trace (row-level security): the request, the
workflow, its activities and every graph node of the tenant's gradings, each with its duration and
its offset from the start of the trace. System spans (no tenant) are for operators only:
``gradeflow trace <id>`` shows the whole trace. 404 when the tenant has no span in that trace.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import AfterValidator, BaseModel, Field

from api.auth import require_roles
from api.deps import PoolsDep, TenantDep
from api.errors import ProblemError
from infra.observability.spantree import trace_summary
from infra.security.tokens import Principal
from infra.stores.traces import load_trace, normalise_trace_id

router = APIRouter(prefix="/v1/traces", tags=["operations"])

AdminDep = Annotated[Principal, Depends(require_roles("admin"))]


def _trace_id(value: str) -> str:
    trace_id = normalise_trace_id(value)
    if trace_id is None:
        raise ValueError("must be a W3C trace id: 32 hexadecimal digits, not all zero")
    return trace_id


TraceId = Annotated[str, Path(description="The trace id (32 hex digits, as in `traceparent` and the 202 reply).",
                              max_length=64), AfterValidator(_trace_id)]


class SpanOut(BaseModel):
    """One span and the spans under it."""

    span_id: str
    parent_span_id: str | None = None
    name: str
    service: str
    started_at: str
    offset_ms: float = Field(description="Start relative to the trace's first span, milliseconds.")
    duration_ms: float
    status: str = Field(description="`ok` or `error`.")
    tenant_id: str | None = None
    orphan: bool = Field(description="Its parent span is not visible here (another service's, or not stored).")
    attributes: dict[str, Any]
    children: list[SpanOut]


class TraceOut(BaseModel):
    """A trace: summary and span tree."""

    trace_id: str
    span_count: int
    started_at: str | None
    duration_ms: float = Field(description="From the first span's start to the last span's end, milliseconds.")
    errors: int
    spans: list[SpanOut] = Field(description="Root spans (oldest first), each with its children.")


@router.get("/{trace_id}", response_model=TraceOut, responses={404: {"description": "No span of this trace."}})
async def get_trace(trace_id: TraceId, admin: AdminDep, tenant: TenantDep, pools: PoolsDep) -> TraceOut:
    """The tenant's spans of one trace as a tree, with durations."""
    roots = await load_trace(pools, trace_id, tenant_id=tenant)
    if not roots:
        raise ProblemError(404, f"No span of trace {trace_id} is stored for this tenant.", type_="trace-not-found")
    start = min(root.started_at for root in roots)
    return TraceOut(trace_id=trace_id, **trace_summary(roots),
                    spans=[SpanOut.model_validate(root.to_dict(start)) for root in roots])
