"""``GET /v1/exams/{id}/grades.csv`` and ``.jsonl`` through the real API and PostgreSQL.

Exams are created through the API; submissions and results are stored with admin SQL (the export
reads what is stored, however it got there): thousands of rows in one statement.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from decimal import Decimal

import psycopg
import pytest

from tests.integration.api.conftest import question

PROBLEM = "application/problem+json"
SEED_SQL = """
WITH s AS (
  INSERT INTO submissions (id, tenant_id, exam_id, student_id, external_id, status, total, max_total, workflow_id,
                           trace_id, created_at, graded_at)
  SELECT gen_random_uuid(), %(tenant)s, %(exam)s, 's-' || lpad(i::text, 6, '0'), NULL, 'completed', (i %% 3) + 1,
         3, 'grade-x' || i, 'trace', timestamptz '2026-05-01 00:00+00' + i * interval '1 second', now()
    FROM generate_series(1, %(n)s) AS i
  RETURNING id, total)
INSERT INTO grading_results (submission_id, question_id, tenant_id, score, max_points, confidence, grader,
                             rubric_version)
SELECT id, q, %(tenant)s, CASE WHEN q = 'q1' THEN total - 1 ELSE 1 END, CASE WHEN q = 'q1' THEN 2 ELSE 1 END,
       0.9, 'rubric', 1
  FROM s, unnest(ARRAY['q1', 'q2']) AS q
"""
BIG_FEEDBACK_SQL = "UPDATE grading_results SET feedback = repeat(md5(question_id), 128) WHERE tenant_id = %s"
"""4 KiB of feedback per result: an export far larger than every socket buffer between server and client."""
APP_EXPORTS_SQL = """
SELECT count(*) FROM pg_stat_activity
 WHERE usename <> current_user AND state IN ('active', 'idle in transaction') AND query ILIKE '%gradebook_export%'"""
"""Backends of the app inside an export transaction (its last statement FETCHes from the export's cursor)."""


async def _exam(client, headers, *questions: str) -> str:
    body = {"title": "Quiz", "questions": [question(q, "numeric") for q in questions]}
    created = await client.post("/v1/exams", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _seed(admin_url: str, tenant: str, exam: str, n: int) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(SEED_SQL, {"tenant": tenant, "exam": exam, "n": n})


def _csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode(), newline=""), strict=True))


async def test_export_walks_every_submission_in_order_across_fetch_batches(client, auth_headers, tenant_id,
                                                                          pg_admin_url) -> None:
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    exam = await _exam(client, reviewer, "q1", "q2")
    _seed(pg_admin_url, tenant_id, exam, 2500)  # 3 fetches of 1000 rows

    resp = await client.get(f"/v1/exams/{exam}/grades.csv", headers=reviewer)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    assert resp.headers["content-disposition"] == f'attachment; filename="grades-{exam}.csv"'
    table = _csv(resp.content)
    assert table[0] == ["submission_id", "student_id", "external_id", "status", "q1", "q2", "total", "max_total",
                        "graded_at"]
    rows = table[1:]
    assert [r[1] for r in rows] == [f"s-{i:06d}" for i in range(1, 2501)]
    for i, row in enumerate(rows, start=1):
        total = (i % 3) + 1
        assert (Decimal(row[4]), Decimal(row[5]), Decimal(row[6])) == (total - 1, 1, total), row
        assert row[2] == "" and row[3] == "completed" and Decimal(row[7]) == 3

    lines = (await client.get(f"/v1/exams/{exam}/grades.jsonl", headers=reviewer)).text.splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["student_id"] for o in objects] == [r[1] for r in rows]
    assert [o["submission_id"] for o in objects] == [r[0] for r in rows]
    assert objects[0]["scores"] == {"q1": 1, "q2": 1} and objects[0]["total"] == 2
    assert objects[0]["external_id"] is None and objects[0]["status"] == "completed"


async def test_empty_exam_is_a_header_or_nothing(client, auth_headers, tenant_id) -> None:
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    exam = await _exam(client, reviewer, "b", "a")
    resp = await client.get(f"/v1/exams/{exam}/grades.csv", headers=reviewer)
    assert resp.status_code == 200
    assert resp.content == b"submission_id,student_id,external_id,status,b,a,total,max_total,graded_at\r\n"
    resp = await client.get(f"/v1/exams/{exam}/grades.jsonl", headers=reviewer)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    assert resp.content == b""


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_another_tenants_exam_is_a_404(client, auth_headers, tenant_id, pg_admin_url, fmt) -> None:
    owner = auth_headers(tenant_id, roles=("reviewer",))
    exam = await _exam(client, owner, "q1", "q2")
    _seed(pg_admin_url, tenant_id, exam, 3)
    other = auth_headers(f"t-{uuid.uuid4().hex[:12]}", roles=("reviewer", "admin"))
    for exam_id in (exam, str(uuid.uuid4())):
        resp = await client.get(f"/v1/exams/{exam_id}/grades.{fmt}", headers=other)
        assert resp.status_code == 404 and resp.headers["content-type"] == PROBLEM, resp.text
        assert resp.json()["type"].endswith("exam-not-found")
        assert "s-000001" not in resp.text
    assert (await client.get(f"/v1/exams/{exam}/grades.{fmt}", headers=owner)).status_code == 200


async def test_bad_exam_id_names_the_parameter_and_submitters_may_not_export(client, auth_headers,
                                                                           tenant_id) -> None:
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    resp = await client.get("/v1/exams/not-a-uuid/grades.csv", headers=reviewer)
    assert resp.status_code == 422 and resp.headers["content-type"] == PROBLEM
    assert [e["field"] for e in resp.json()["errors"]] == ["exam_id"]
    resp = await client.get(f"/v1/exams/{uuid.uuid4()}/grades.csv", params={"feedback": "maybe"}, headers=reviewer)
    assert resp.status_code == 422 and [e["field"] for e in resp.json()["errors"]] == ["feedback"]
    exam = await _exam(client, reviewer, "q1")
    resp = await client.get(f"/v1/exams/{exam}/grades.csv", headers=auth_headers(tenant_id, roles=("submitter",)))
    assert resp.status_code == 403 and resp.headers["content-type"] == PROBLEM


async def test_the_export_streams_from_an_open_cursor_and_a_client_leaving_gives_it_back(
        client, auth_headers, tenant_id, pg_admin_url) -> None:
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    exam = await _exam(client, reviewer, "q1", "q2")
    _seed(pg_admin_url, tenant_id, exam, 5000)
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        await conn.execute(BIG_FEEDBACK_SQL, (tenant_id,))  # ~40 MB of CSV
        for _ in range(3):
            async with client.stream("GET", f"/v1/exams/{exam}/grades.csv", params={"feedback": "true"},
                                     headers=reviewer) as resp:
                assert resp.status_code == 200
                received = b""
                async for chunk in resp.aiter_raw():  # the header, then rows: the cursor is open
                    received += chunk
                    if len(received) > 100_000:
                        break
                assert received.startswith(b"submission_id,")
                # The client stopped reading: the server waits to write more, its cursor open.
                assert (await (await conn.execute(APP_EXPORTS_SQL)).fetchone())[0] == 1
            # Leaving the block closes the connection half-way through the body; the server
            # notices on its next write and rolls the export's transaction back.
            for _ in range(100):
                left = (await (await conn.execute(APP_EXPORTS_SQL)).fetchone())[0]
                if left == 0:
                    break
                await asyncio.sleep(0.1)
            assert left == 0
    again = await client.get(f"/v1/exams/{exam}/grades.jsonl", headers=reviewer)
    assert again.status_code == 200 and again.text.count("\n") == 5000
