# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Properties 12 and 13 through the real API: pages hold at most page_size rows, sorted as asked,
filters applied, cursors walk the whole result once; ``fields=`` returns exactly those fields."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.db.listing import SUBMISSIONS
from tests.integration.api_contract.fixtures import new_tenant

STATUSES = ["queued", "grading", "needs_review", "completed", "failed", "needs_intervention"]
STUDENTS = ["s-01", "s-02", "s-03", "s-04"]
BASE = datetime(2026, 3, 1, tzinfo=UTC)
INSERT_SUBMISSION_SQL = """INSERT INTO submissions (id, tenant_id, exam_id, student_id, status, total, max_total,
workflow_id, trace_id, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 10, %s, 'trace', %s, %s)"""


@pytest.fixture
def seeded(pg_admin_url):
    """A tenant with 2 exams and 45 submissions (ties in created_at and total on purpose)."""
    rng = random.Random(12)
    tenant = new_tenant()
    exams = [str(uuid.uuid4()) for _ in range(2)]
    rows = []
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id) VALUES (%s)", (tenant,))
        for exam in exams:
            conn.execute("INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, 'e')", (exam, tenant))
        for _ in range(45):
            sid = str(uuid.uuid4())
            created = BASE + timedelta(minutes=rng.randrange(20))
            total = rng.choice([None, Decimal(rng.randrange(0, 11))])
            row = {"id": sid, "exam_id": rng.choice(exams), "student_id": rng.choice(STUDENTS),
                   "status": rng.choice(STATUSES), "total": total, "created_at": created,
                   "updated_at": created + timedelta(seconds=rng.randrange(100))}
            conn.execute(INSERT_SUBMISSION_SQL, (sid, tenant, row["exam_id"], row["student_id"], row["status"],
                                                 total, f"grade-{sid}", created, row["updated_at"]))
            rows.append(row)
    return tenant, exams, rows


def _sort_value(row: dict, sort_by: str):
    if sort_by == "total":
        return row["total"] if row["total"] is not None else Decimal(-1)
    return row[sort_by]


def _expected(rows: list[dict], params: dict) -> list[str]:
    keep = []
    for row in rows:
        if "status" in params and row["status"] != params["status"]:
            continue
        if "exam_id" in params and row["exam_id"] != params["exam_id"]:
            continue
        if "student_id" in params and row["student_id"] != params["student_id"]:
            continue
        if "min_total" in params and (row["total"] is None or row["total"] < params["min_total"]):
            continue
        if "max_total" in params and (row["total"] is None or row["total"] > params["max_total"]):
            continue
        if "created_after" in params and row["created_at"] < datetime.fromisoformat(params["created_after"]):
            continue
        if "created_before" in params and row["created_at"] >= datetime.fromisoformat(params["created_before"]):
            continue
        keep.append(row)
    sort_by = params.get("sort_by", "created_at")
    keep.sort(key=lambda r: (_sort_value(r, sort_by), r["id"]), reverse=params.get("sort_order", "desc") == "desc")
    return [r["id"] for r in keep]


instants = st.integers(0, 20).map(lambda m: (BASE + timedelta(minutes=m)).isoformat())
filters = st.fixed_dictionaries({}, optional={
    "status": st.sampled_from(STATUSES), "student_id": st.sampled_from(STUDENTS),
    "min_total": st.integers(0, 10), "max_total": st.integers(0, 10),
    "created_after": instants, "created_before": instants,
})
queries = st.fixed_dictionaries({"page_size": st.integers(1, 12)}, optional={
    "sort_by": st.sampled_from(["created_at", "updated_at", "student_id", "status", "total"]),
    "sort_order": st.sampled_from(["asc", "desc"]), "page": st.integers(1, 5),
})


@given(query=queries, where=filters, pick_exam=st.booleans())
async def test_pages_are_bounded_sorted_filtered_and_cursor_complete(api, bearer, seeded, query, where,
                                                                     pick_exam) -> None:
    tenant, exams, rows = seeded
    params = {**query, **where, **({"exam_id": exams[0]} if pick_exam else {})}
    expected = _expected(rows, params)
    resp = await api.get("/v1/submissions", params=params, headers=bearer(tenant))
    assert resp.status_code == 200, resp.text
    page = resp.json()
    size, number = params["page_size"], params.get("page", 1)
    assert len(page["items"]) <= size
    assert [i["id"] for i in page["items"]] == expected[(number - 1) * size: number * size]

    walked, cursor = [], None
    for _ in range(len(expected) // size + 2):  # the cursor walk returns every row once, in order
        step = {k: v for k, v in params.items() if k != "page"} | ({"cursor": cursor} if cursor else {})
        got = (await api.get("/v1/submissions", params=step, headers=bearer(tenant))).json()
        walked += [i["id"] for i in got["items"]]
        cursor = got["next_cursor"]
        if cursor is None:
            break
    assert walked == expected


@given(fields=st.lists(st.sampled_from(SUBMISSIONS.fields), min_size=1, max_size=6, unique=True),
       page_size=st.integers(1, 20))
async def test_fields_returns_exactly_the_requested_fields(api, bearer, seeded, fields, page_size) -> None:
    tenant, _, _ = seeded
    resp = await api.get("/v1/submissions", params={"fields": ",".join(fields), "page_size": page_size},
                         headers=bearer(tenant))
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert items and all(set(item) == set(fields) for item in items)


@given(bad=st.text(st.characters(codec="ascii", categories=("L",)), min_size=1, max_size=12).filter(
    lambda s: s not in SUBMISSIONS.fields))
async def test_unknown_field_is_422(api, bearer, seeded, bad) -> None:
    tenant, _, _ = seeded
    resp = await api.get("/v1/submissions", params={"fields": f"id,{bad}"}, headers=bearer(tenant))
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["errors"][0]["field"] == "fields"
