"""List endpoints: ``GET /v1/submissions`` and ``GET /v1/exams`` (page, sort, filter, fields, cursor).

Parameters are validated twice: by FastAPI (types, ranges, enums; documented in OpenAPI) and by
the whitelist of :mod:`infra.db.listing`, which alone builds SQL. ``fields=`` trims every item to
exactly the named fields; ``cursor`` (from ``next_cursor``) continues a listing by keyset. Instants
are compared in UTC (one without an offset is taken as UTC). A caller whose only role is
``submitter`` lists only the submissions it created.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.auth import PrincipalDep, reads_everything
from api.deps import PoolsDep, SettingsDep, TenantDep, TraceIdDep
from api.errors import ProblemError
from infra.constants import SubmissionStatus
from infra.db import listing
from infra.db.values import Label

router = APIRouter(prefix="/v1", tags=["listing"])

CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"


class SubmissionItem(BaseModel):
    """A submission in a list (only the selected fields are present)."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = None
    exam_id: uuid.UUID | None = None
    student_id: str | None = None
    external_id: str | None = None
    status: SubmissionStatus | None = None
    total: float | None = None
    max_total: float | None = None
    workflow_id: str | None = None
    trace_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    graded_at: datetime | None = None


class ExamItem(BaseModel):
    """An exam in a list (only the selected fields are present)."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = None
    title: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class _PageMeta(BaseModel):
    page: int = Field(ge=1)
    page_size: int = Field(ge=1, le=listing.MAX_PAGE_SIZE)
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` to fetch the rows after this page.")


class SubmissionPage(_PageMeta):
    """A page of submissions."""

    items: list[SubmissionItem]


class ExamPage(_PageMeta):
    """A page of exams."""

    items: list[ExamItem]


Page = Annotated[int, Query(ge=1, le=10_000, description="1-based page (ignored with `cursor`).")]
PageSize = Annotated[int, Query(ge=1, le=listing.MAX_PAGE_SIZE, description="Rows per page, at most 100.")]
SortOrder = Annotated[Literal["asc", "desc"], Query(description="Sort direction; ties broken by id.")]
Fields = Annotated[str | None, Query(max_length=500, examples=["id,status,total"],
                                     description="Comma-separated fields to return; unknown ones → 422.")]
Cursor = Annotated[str | None, Query(max_length=1000, pattern=CURSOR_PATTERN,
                                     description="Opaque keyset cursor from a previous page's `next_cursor`.")]
def _utc(value: datetime | None) -> datetime | None:
    """The instant in UTC (naive: taken as UTC), so PostgreSQL gets an offset it accepts."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("instant out of range") from None


After = Annotated[datetime | None, AfterValidator(_utc),
                  Query(description="Only rows created at or after this instant (UTC without an offset).")]
Before = Annotated[datetime | None, AfterValidator(_utc),
                   Query(description="Only rows created before this instant (UTC without an offset).")]


async def _fetch(pools: object, settings: object, tenant: str, trace_id: str, resource: listing.ListResource,
                 query: listing.ListQuery) -> dict:
    try:
        page = await listing.fetch_page(pools, tenant, resource, query,
                                        slow_ms=getattr(settings, "slow_query_ms", 250.0), trace_id=trace_id)
    except listing.ListingError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]} for e in exc.errors]
        raise ProblemError(422, "The list parameters are invalid; see errors.", type_="validation-error",
                           errors=errors) from None
    return {"items": page.items, "page": page.page, "page_size": page.page_size, "has_more": page.has_more,
            "next_cursor": page.next_cursor}


def _fields(resource: listing.ListResource, text: str | None) -> tuple[str, ...] | None:
    try:
        return listing.parse_fields(resource, text)
    except listing.ListingError as exc:
        raise ProblemError(422, "Unknown fields requested; see errors.", type_="validation-error",
                           errors=[{"field": "fields", "message": e["msg"]} for e in exc.errors]) from None


@router.get("/submissions", response_model=SubmissionPage, response_model_exclude_unset=True)
async def list_submissions(
    principal: PrincipalDep, tenant: TenantDep, pools: PoolsDep, settings: SettingsDep, trace_id: TraceIdDep,
    page: Page = 1, page_size: PageSize = 20,
    sort_by: Annotated[Literal["created_at", "updated_at", "student_id", "status", "total"],
                       Query(description="Sort field (a missing total sorts lowest).")] = "created_at",
    sort_order: SortOrder = "desc",
    status: SubmissionStatus | None = None,
    exam_id: uuid.UUID | None = None,
    student_id: Annotated[Label | None, Query(min_length=1, max_length=200)] = None,
    created_after: After = None, created_before: Before = None,
    min_total: Annotated[float | None, Query(allow_inf_nan=False, description="Minimum total score.")] = None,
    max_total: Annotated[float | None, Query(allow_inf_nan=False, description="Maximum total score.")] = None,
    fields: Fields = None, cursor: Cursor = None,
) -> dict:
    """List the tenant's submissions, newest first by default (a submitter's own only)."""
    query = listing.ListQuery(
        page=page, page_size=page_size, sort_by=sort_by, sort_order=sort_order,
        filters={"status": status.value if status else None, "exam_id": exam_id, "student_id": student_id,
                 "created_after": created_after, "created_before": created_before,
                 "min_total": min_total, "max_total": max_total,
                 "submitted_by": None if reads_everything(principal) else principal.sub},
        fields=_fields(listing.SUBMISSIONS, fields), cursor=cursor)
    return await _fetch(pools, settings, tenant, trace_id, listing.SUBMISSIONS, query)


@router.get("/exams", response_model=ExamPage, response_model_exclude_unset=True)
async def list_exams(
    tenant: TenantDep, pools: PoolsDep, settings: SettingsDep, trace_id: TraceIdDep,
    page: Page = 1, page_size: PageSize = 20,
    sort_by: Annotated[Literal["created_at", "updated_at", "title"], Query(description="Sort field.")] = "created_at",
    sort_order: SortOrder = "desc",
    created_after: After = None, created_before: Before = None,
    fields: Fields = None, cursor: Cursor = None,
) -> dict:
    """List the tenant's exams (without their questions), newest first by default."""
    query = listing.ListQuery(
        page=page, page_size=page_size, sort_by=sort_by, sort_order=sort_order,
        filters={"created_after": created_after, "created_before": created_before},
        fields=_fields(listing.EXAMS, fields), cursor=cursor)
    return await _fetch(pools, settings, tenant, trace_id, listing.EXAMS, query)
