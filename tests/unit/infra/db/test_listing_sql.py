"""Listing query builder: whitelists, parameters only, cursors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infra.db.listing import (
    EXAMS,
    SUBMISSIONS,
    ListingError,
    ListQuery,
    build_list_sql,
    decode_cursor,
    encode_cursor,
    parse_fields,
)


def _text(statement) -> str:  # noqa: ANN001
    return statement.as_string(None)


def test_default_query_orders_by_created_at_then_id() -> None:
    statement, params = build_list_sql(SUBMISSIONS, ListQuery(), "t1")
    text = _text(statement)
    assert 'FROM "submissions" WHERE tenant_id = %(tenant)s' in text
    assert "ORDER BY created_at DESC, id DESC" in text
    assert params == {"tenant": "t1", "limit": 21, "offset": 0}


def test_filters_are_parameters_never_literals() -> None:
    evil = "x'; DROP TABLE submissions; --"
    statement, params = build_list_sql(
        SUBMISSIONS, ListQuery(filters={"student_id": evil, "status": "queued", "min_total": None}), "t")
    text = _text(statement)
    assert evil not in text and '"student_id" = %(f_student_id)s' in text
    assert params["f_student_id"] == evil and "f_min_total" not in params


@pytest.mark.parametrize("query", [
    ListQuery(sort_by="id; DROP"), ListQuery(sort_order="sideways"),  # type: ignore[arg-type]
    ListQuery(page_size=101), ListQuery(page=0), ListQuery(filters={"tenant_id": "other"}),
])
def test_anything_off_the_whitelist_is_refused(query: ListQuery) -> None:
    with pytest.raises(ListingError) as info:
        build_list_sql(SUBMISSIONS, query, "t")
    assert info.value.errors and all(e["loc"][0] == "query" for e in info.value.errors)


def test_fields_parsing() -> None:
    assert parse_fields(SUBMISSIONS, "id, status,id") == ("id", "status")
    assert parse_fields(SUBMISSIONS, None) is None
    with pytest.raises(ListingError):
        parse_fields(SUBMISSIONS, "id,password")
    with pytest.raises(ListingError):
        parse_fields(EXAMS, "status")


def test_cursor_round_trip_and_sort_binding() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    cursor = encode_cursor("created_at", "desc", when, "0b8c1f9e-1111-4222-8333-444455556666")
    query = ListQuery(cursor=cursor)
    assert decode_cursor(cursor, query) == (str(when), "0b8c1f9e-1111-4222-8333-444455556666")
    statement, params = build_list_sql(SUBMISSIONS, query, "t")
    assert "(created_at, id) < (%(cursor_value)s::timestamptz, %(cursor_id)s::uuid)" in _text(statement)
    assert params["offset"] == 0
    with pytest.raises(ListingError):
        decode_cursor(cursor, ListQuery(sort_order="asc"))
    with pytest.raises(ListingError):
        decode_cursor("%%%not-base64", query)
