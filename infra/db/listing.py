"""A small, whitelisted query builder for list endpoints (page, sort, filter, fields, cursor).

Only names declared in a :class:`ListResource` ever reach SQL, as identifiers or fixed
expressions; every value is a parameter. Deep pages use an opaque keyset ``cursor`` (base64url of
the last row's sort key and id) so they cost the same as the first page. A cursor is decoded into
typed values PostgreSQL accepts (an aware UTC ``datetime``, a finite ``Decimal`` of bounded
exponent, storable text, a canonical UUID): a forged one is a 422, never a database error. The default sort
``created_at DESC, id DESC`` and the status filter match the ``(tenant_id[, status], created_at
DESC, id DESC)`` indexes. Queries slower than a threshold are logged with their trace id and counted.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from psycopg import sql

from infra.db.values import text_problem
from infra.observability.metrics import SLOW_LIST_QUERIES

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100

LIST_SQL = ("SELECT {columns}, {sort_expr} AS _sort_key FROM {table} WHERE tenant_id = %(tenant)s"
            "{conditions} ORDER BY {sort_expr} {direction}, id {direction} LIMIT %(limit)s OFFSET %(offset)s")
"""Template; ``{...}`` parts are composed from whitelisted names only."""
CURSOR_DESC_SQL = " AND ({sort_expr}, id) < (%(cursor_value)s::{cast}, %(cursor_id)s::uuid)"
CURSOR_ASC_SQL = " AND ({sort_expr}, id) > (%(cursor_value)s::{cast}, %(cursor_id)s::uuid)"


class ListingError(ValueError):
    """Invalid list parameters; ``errors`` names each offending query parameter (HTTP 422)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class SortKey:
    """A sortable field: a fixed SQL expression and the type its cursor value is cast to."""

    expression: str
    cast: str


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """A filter: ``column op %(name)s``."""

    column: str
    op: Literal["=", ">=", "<=", "<", ">"]


@dataclass(frozen=True, slots=True)
class ListResource:
    """What may be listed, selected, sorted and filtered for one table."""

    name: str
    table: str
    fields: tuple[str, ...]
    sort_keys: Mapping[str, SortKey]
    filters: Mapping[str, FilterSpec]
    default_sort: str = "created_at"


SUBMISSIONS = ListResource(
    name="submissions", table="submissions",
    fields=("id", "exam_id", "student_id", "external_id", "status", "total", "max_total", "workflow_id",
            "trace_id", "created_at", "updated_at", "graded_at"),
    sort_keys={"created_at": SortKey("created_at", "timestamptz"),
               "updated_at": SortKey("updated_at", "timestamptz"),
               "student_id": SortKey("student_id", "text"),
               "status": SortKey("status", "text"),
               "total": SortKey("COALESCE(total, -1)", "numeric")},
    filters={"status": FilterSpec("status", "="), "exam_id": FilterSpec("exam_id", "="),
             "student_id": FilterSpec("student_id", "="), "created_after": FilterSpec("created_at", ">="),
             "created_before": FilterSpec("created_at", "<"), "min_total": FilterSpec("total", ">="),
             "max_total": FilterSpec("total", "<="), "submitted_by": FilterSpec("submitted_by", "=")},
)
"""Submissions; a missing ``total`` sorts lowest. ``submitted_by`` is set by the API, never by a query parameter."""

EXAMS = ListResource(
    name="exams", table="exams", fields=("id", "title", "created_at", "updated_at"),
    sort_keys={"created_at": SortKey("created_at", "timestamptz"),
               "updated_at": SortKey("updated_at", "timestamptz"), "title": SortKey("title", "text")},
    filters={"created_after": FilterSpec("created_at", ">="), "created_before": FilterSpec("created_at", "<")},
)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Validated list parameters."""

    page: int = 1
    page_size: int = 20
    sort_by: str = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    filters: Mapping[str, Any] = field(default_factory=dict)
    """Filter name → value; ``None`` values are ignored."""
    fields: tuple[str, ...] | None = None
    """Fields to return; ``None``: all of the resource's fields."""
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows, each holding exactly the selected fields."""

    items: list[dict[str, Any]]
    page: int
    page_size: int
    has_more: bool
    next_cursor: str | None


def parse_fields(resource: ListResource, text: str | None) -> tuple[str, ...] | None:
    """Parse ``fields=a,b``; unknown or empty names raise :class:`ListingError`."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in resource.fields]
    if bad or not names:
        raise ListingError([{"loc": ["query", "fields"], "type": "enum",
                             "msg": f"unknown field(s) {bad}; allowed: {', '.join(resource.fields)}"}])
    return tuple(dict.fromkeys(names))


def encode_cursor(sort_by: str, sort_order: str, value: Any, row_id: Any) -> str:
    """Opaque cursor naming the position after a row."""
    raw = json.dumps({"s": sort_by, "o": sort_order, "v": None if value is None else str(value),
                      "i": str(row_id)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, query: ListQuery, cast: str = "text") -> tuple[Any, str]:
    """Return ``(value, id)`` of a cursor made for the same sort; else :class:`ListingError`.

    The value is typed for its SQL ``cast`` (see :data:`_CURSOR_VALUES`), the id is a canonical UUID.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        value, row_id, sort_by, order = data["v"], data["i"], data["s"], data["o"]
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise ListingError([{"loc": ["query", "cursor"], "type": "value_error",
                             "msg": "malformed cursor"}]) from exc
    if (sort_by, order) != (query.sort_by, query.sort_order) or not isinstance(row_id, str) or value is None:
        raise ListingError([{"loc": ["query", "cursor"], "type": "value_error",
                             "msg": "cursor was made for another sort order"}])
    try:
        if not isinstance(value, str):
            raise TypeError("cursor value must be a string")
        return _CURSOR_VALUES[cast](value), str(uuid.UUID(row_id))
    except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
        raise ListingError([{"loc": ["query", "cursor"], "type": "value_error",
                             "msg": "malformed cursor"}]) from exc


MAX_CURSOR_EXPONENT = 1000
"""Largest decimal exponent of a numeric cursor value (PostgreSQL's ``numeric`` overflows far above)."""


def _instant(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("cursor instant without a UTC offset")
    return when.astimezone(UTC)  # any offset Python accepts, as the instant PostgreSQL stores


def _number(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError("not a number") from exc
    if not number.is_finite() or abs(number.adjusted()) > MAX_CURSOR_EXPONENT:
        raise ValueError("cursor number out of range")
    return number


def _text(value: str) -> str:
    if (problem := text_problem(value)) is not None:
        raise ValueError(f"cursor text {problem}")
    return value


_CURSOR_VALUES: dict[str, Callable[[str], Any]] = {"timestamptz": _instant, "numeric": _number, "text": _text}
"""Decode a cursor value into the Python value its SQL cast receives, so PostgreSQL never refuses it."""


def validate(resource: ListResource, query: ListQuery) -> None:
    """Check a query against the resource's whitelist (raises :class:`ListingError`)."""
    errors = []
    if query.sort_by not in resource.sort_keys:
        errors.append({"loc": ["query", "sort_by"], "type": "enum",
                       "msg": f"sort_by must be one of {', '.join(resource.sort_keys)}"})
    if query.sort_order not in ("asc", "desc"):
        errors.append({"loc": ["query", "sort_order"], "type": "enum", "msg": "sort_order must be asc or desc"})
    if not 1 <= query.page_size <= MAX_PAGE_SIZE:
        errors.append({"loc": ["query", "page_size"], "type": "range", "msg": "page_size must be 1..100"})
    if query.page < 1:
        errors.append({"loc": ["query", "page"], "type": "range", "msg": "page must be >= 1"})
    errors += [{"loc": ["query", name], "type": "extra", "msg": f"unknown filter {name}"}
               for name in query.filters if name not in resource.filters]
    if query.fields is not None:
        parse_fields(resource, ",".join(query.fields))
    if errors:
        raise ListingError(errors)


def build_list_sql(resource: ListResource, query: ListQuery, tenant_id: str) -> tuple[sql.Composed, dict]:
    """Compose the page query and its parameters (validates first)."""
    validate(resource, query)
    key = resource.sort_keys[query.sort_by]
    sort_expr = sql.SQL(key.expression)
    direction = sql.SQL("DESC" if query.sort_order == "desc" else "ASC")
    params: dict[str, Any] = {"tenant": tenant_id, "limit": query.page_size + 1}
    conditions: list[sql.Composable] = []
    for name, value in query.filters.items():
        if value is None:
            continue
        spec = resource.filters[name]
        conditions.append(sql.SQL(" AND {} {} {}").format(
            sql.Identifier(spec.column), sql.SQL(spec.op), sql.Placeholder(f"f_{name}")))
        params[f"f_{name}"] = value
    if query.cursor:
        params["cursor_value"], params["cursor_id"] = decode_cursor(query.cursor, query, key.cast)
        template = CURSOR_DESC_SQL if query.sort_order == "desc" else CURSOR_ASC_SQL
        conditions.append(sql.SQL(template).format(sort_expr=sort_expr, cast=sql.SQL(key.cast)))
        params["offset"] = 0
    else:
        params["offset"] = (query.page - 1) * query.page_size
    columns = sql.SQL(", ").join(sql.Identifier(f) for f in dict.fromkeys(("id", *resource.fields)))
    statement = sql.SQL(LIST_SQL).format(
        columns=columns, sort_expr=sort_expr, table=sql.Identifier(resource.table),
        conditions=sql.Composed(conditions), direction=direction)
    return statement, params


def _trace_id() -> str | None:
    try:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else None
    except ImportError:  # pragma: no cover
        return None


async def fetch_page(pools: Any, tenant_id: str, resource: ListResource, query: ListQuery, *,
                     slow_ms: float = 250.0, trace_id: str | None = None) -> Page:
    """Run a list query under the tenant's RLS context.

    Args:
        pools: the :class:`infra.db.pools.PoolManager`.
        tenant_id: tenant whose rows are listed.
        resource: what is listed.
        query: page, sort, filters, fields and cursor.
        slow_ms: queries slower than this are logged (with the trace id) and counted.
        trace_id: trace id for the slow-query log (default: the current OpenTelemetry span's).

    Raises:
        ListingError: invalid parameters.

    """
    statement, params = build_list_sql(resource, query, tenant_id)
    started = time.perf_counter()
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute(statement, params)
        rows = await cur.fetchall()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if elapsed_ms > slow_ms:
        SLOW_LIST_QUERIES.labels(resource.name).inc()
        logger.warning("slow list query on %s: %.0f ms (trace_id=%s, sort=%s, filters=%s)", resource.name,
                       elapsed_ms, trace_id or _trace_id(), query.sort_by, sorted(query.filters))
    has_more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    wanted: Sequence[str] = query.fields or resource.fields
    next_cursor = None
    if has_more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(query.sort_by, query.sort_order, last["_sort_key"], last["id"])
    return Page(items=[{f: row[f] for f in wanted} for row in rows], page=query.page,
                page_size=query.page_size, has_more=has_more, next_cursor=next_cursor)
