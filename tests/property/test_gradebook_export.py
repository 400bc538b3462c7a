# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Gradebook export through the real API: whatever text is stored, the CSV parses back to it.

Student ids, external ids, question ids and feedback are generated with quotes, commas, CR/LF and
formula prefixes; each example stores an exam with its submissions and results (admin SQL: the
stored values are what the property is about, not the API's input rules), exports it as CSV and as
JSON Lines, and parses both back with independent readers (``csv`` and ``json``).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.api_contract.fixtures import new_tenant

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BASE = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)

# Text PostgreSQL can store (no NUL, no lone surrogates), biased towards what breaks CSV and spreadsheets.
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_tricky = st.sampled_from(['"', ",", "\n", "\r", "\r\n", "=", "+", "-", "@", "\t", "'", " ", "=SUM(A1:A2)", ";"])
texts = st.lists(st.one_of(_tricky, st.text(_chars, max_size=4)), max_size=6).map("".join)
names = texts.filter(bool)
scores = st.one_of(st.none(), st.decimals(min_value=0, max_value=5, places=2))

INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, 'export')"
INSERT_QUESTION_SQL = """
INSERT INTO questions (exam_id, question_id, tenant_id, position, type, prompt, max_points)
VALUES (%s, %s, %s, %s, 'short_answer', 'p', 5)"""
INSERT_SUBMISSION_SQL = """
INSERT INTO submissions (id, tenant_id, exam_id, student_id, external_id, status, total, max_total, workflow_id,
                         trace_id, created_at, graded_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'trace', %s, %s)"""
INSERT_RESULT_SQL = """
INSERT INTO grading_results (submission_id, question_id, tenant_id, score, max_points, confidence, feedback, grader,
                             rubric_version)
VALUES (%s, %s, %s, %s, 5, 0.9, %s, 'rubric', 1)"""

submissions = st.lists(st.fixed_dictionaries({
    "student_id": names, "external_id": st.one_of(st.none(), texts), "feedback": texts, "scores": st.lists(scores),
    "graded": st.booleans()}), max_size=4,
    unique_by=lambda s: (s["student_id"], s["external_id"]))  # (student, external id) is unique per exam


def _seed(admin_url: str, questions: list[str], subs: list[dict]) -> tuple[str, str, list[dict]]:
    tenant, exam = new_tenant(), str(uuid.uuid4())
    stored = []
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id) VALUES (%s)", (tenant,))
        conn.execute(INSERT_EXAM_SQL, (exam, tenant))
        for pos, qid in enumerate(questions):
            conn.execute(INSERT_QUESTION_SQL, (exam, qid, tenant, pos))
        for i, sub in enumerate(subs):
            sid = str(uuid.uuid4())
            per_q = (sub["scores"] + [None] * len(questions))[: len(questions)]
            total = sum((s for s in per_q if s is not None), Decimal(0)) if sub["graded"] else None
            graded_at = BASE + timedelta(minutes=i) if sub["graded"] else None
            conn.execute(INSERT_SUBMISSION_SQL, (
                sid, tenant, exam, sub["student_id"], sub["external_id"], "completed" if sub["graded"] else "queued",
                total, Decimal(5 * len(questions)), f"grade-{sid}", BASE + timedelta(seconds=i), graded_at))
            for qid, score in zip(questions, per_q, strict=True):
                if score is not None:
                    conn.execute(INSERT_RESULT_SQL, (sid, qid, tenant, score, f"{sub['feedback']}|{qid}"))
            stored.append({"id": sid, **sub, "scores": per_q, "total": total, "graded_at": graded_at,
                           "feedback": [None if s is None else f"{sub['feedback']}|{q}" for q, s in zip(
                               questions, per_q, strict=True)]})
    return tenant, exam, stored


def _text_back(cell: str, stored: str) -> str:
    """The documented reading of a text cell: one leading ``'`` is the escape."""
    if stored.startswith((*FORMULA_START, "'")):
        assert cell == "'" + stored  # escaped ...
    assert not cell.startswith(FORMULA_START)  # ... so no cell starts like a formula
    return cell[1:] if cell.startswith("'") else cell


def _number_back(cell: str) -> Decimal | None:
    return None if cell == "" else Decimal(cell)


@given(questions=st.lists(names, min_size=0, max_size=3, unique=True), subs=submissions)
async def test_csv_and_jsonl_parse_back_to_the_stored_values(api, bearer, pg_admin_url, questions, subs) -> None:
    tenant, exam, stored = _seed(pg_admin_url, questions, subs)
    headers = bearer(tenant, roles=("reviewer",))

    resp = await api.get(f"/v1/exams/{exam}/grades.csv", params={"feedback": "true"}, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    assert resp.content.endswith(b"\r\n")
    table = list(csv.reader(io.StringIO(resp.content.decode("utf-8"), newline=""), strict=True))
    head, rows = table[0], table[1:]
    assert head[:4] == ["submission_id", "student_id", "external_id", "status"]
    assert head[-3:] == ["total", "max_total", "graded_at"]
    assert [_text_back(c, q) for c, q in zip(head[4:-3:2], questions, strict=True)] == questions
    assert len(rows) == len(stored)
    for row, sub in zip(rows, stored, strict=True):
        assert len(row) == len(head)
        assert row[0] == sub["id"]
        assert _text_back(row[1], sub["student_id"]) == sub["student_id"]
        assert (_text_back(row[2], sub["external_id"]) if sub["external_id"] is not None else row[2]) == \
            (sub["external_id"] or "")
        assert [_number_back(c) for c in row[4:-3:2]] == sub["scores"]
        assert [None if s is None else _text_back(c, f) for c, f, s in zip(
            row[5:-3:2], sub["feedback"], sub["scores"], strict=True)] == sub["feedback"]
        assert [c for c, s in zip(row[5:-3:2], sub["scores"], strict=True) if s is None] == \
            ["" for s in sub["scores"] if s is None]
        assert _number_back(row[-3]) == sub["total"]
        assert _number_back(row[-2]) == Decimal(5 * len(questions))
        graded = datetime.fromisoformat(row[-1]) if row[-1] else None
        assert graded == sub["graded_at"]

    resp = await api.get(f"/v1/exams/{exam}/grades.jsonl", params={"feedback": "true"}, headers=headers)
    assert resp.status_code == 200, resp.text
    lines = resp.content.decode("utf-8").split("\n")
    assert lines[-1] == ""
    objects = [json.loads(line, parse_float=Decimal) for line in lines[:-1]]
    assert len(objects) == len(stored)
    for obj, sub in zip(objects, stored, strict=True):
        assert obj["submission_id"] == sub["id"] and obj["student_id"] == sub["student_id"]
        assert obj["external_id"] == sub["external_id"]
        assert list(obj["scores"]) == questions and list(obj["feedback"]) == questions
        assert [None if v is None else Decimal(v) for v in obj["scores"].values()] == sub["scores"]
        assert list(obj["feedback"].values()) == sub["feedback"]
        assert (None if obj["total"] is None else Decimal(obj["total"])) == sub["total"]
        graded = datetime.fromisoformat(obj["graded_at"]) if obj["graded_at"] else None
        assert graded == sub["graded_at"]
