# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Hostile input through the real API (issue 9): every write route and the list parameters.

Generated strings with NUL, lone surrogates and control characters, non-finite and huge numbers,
deep nesting and wrong types, each put into one field of an otherwise valid request. Every answer is
a 4xx ``application/problem+json`` naming that field, never a 500, and what the tenant stored before
reads back unchanged.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api_contract.fixtures import new_tenant

PROBLEM = "application/problem+json"
TABLES = ("exams", "questions", "rubric_versions", "submissions", "answers", "event_outbox", "review_log",
          "saga_transactions", "idempotency_cache")

BAD_CHARS = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
CONTROL_CHARS = st.sampled_from(["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\ud800", "\udc00"])
_text = st.text(max_size=12)
unstorable_text = st.tuples(_text, BAD_CHARS, _text).map("".join)
"""Text PostgreSQL cannot store: it holds a NUL or a lone surrogate somewhere."""
bad_label = st.tuples(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12),
                      CONTROL_CHARS, _text).map("".join)
"""An id or title with a control character (or a NUL or a lone surrogate)."""
bad_number = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309", "-1e400", "1E999999"]),
    st.integers(min_value=310, max_value=4000).map(lambda n: "9" * n),
)
"""A JSON number token that is not a finite float (or is far too large for one)."""
not_text = st.sampled_from(["[]", "{}", "12", "true", "[1, [2, [3]]]", '{"a": {"b": null}}'])
"""A JSON value where text is expected (``null`` and strings excluded: those may be valid)."""
not_number = st.sampled_from(["[]", "{}", '"text"', '"1e309"', "[1, [2]]", '{"a": null}'])
"""A JSON value where a number is expected (``true`` excluded: lax validation reads it as 1)."""
deep = st.integers(min_value=40, max_value=300).map(lambda n: "[" * n + "]" * n)
"""Nesting far deeper than any answer has."""

PLACEHOLDER = "@@raw@@"


def render(body: Any, path: tuple[Any, ...], value: Any, *, raw: bool) -> bytes:
    """JSON of ``body`` with ``path`` set to ``value`` (a raw JSON token when ``raw``)."""
    body = copy.deepcopy(body)
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = PLACEHOLDER if raw else value
    text = json.dumps(body)  # ensure_ascii: NUL and lone surrogates as \u escapes, as a client sends them
    if raw:
        text = text.replace(json.dumps(PLACEHOLDER), value)
    return text.encode()


def field_of(path: tuple[Any, ...]) -> str:
    """The problem's field for a body path (``questions[0].rubric.options[1]``)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


EXAM_TEXT = [("title",), ("questions", 0, "id"), ("questions", 0, "prompt"), ("questions", 0, "rubric", "options", 2),
             ("questions", 2, "rubric", "criteria", 0, "keywords", 0), ("questions", 2, "rubric", "criteria", 0, "id"),
             ("questions", 3, "rubric", "criteria", 1, "description")]
EXAM_LABELS = [("title",), ("questions", 0, "id"), ("questions", 2, "rubric", "criteria", 0, "id")]
EXAM_NUMBERS = [("questions", 0, "max_points"), ("questions", 1, "rubric", "value"),
                ("questions", 1, "rubric", "abs_tol"), ("questions", 1, "rubric", "rel_tol"),
                ("questions", 2, "rubric", "criteria", 0, "points"), ("questions", 1, "max_points")]
RUBRIC_TEXT = [("q1", ("options", 0)), ("q1", ("correct", 0)), ("q3", ("criteria", 0, "keywords", 0)),
               ("q3", ("criteria", 0, "description"))]
RUBRIC_NUMBERS = [("q2", ("value",)), ("q2", ("abs_tol",)), ("q3", ("criteria", 0, "points"))]
RUBRICS = {"q1": {"options": ["a", "b", "c"], "correct": ["b"]}, "q2": {"value": 42, "abs_tol": 0.5},
           "q3": {"criteria": [{"id": "c1", "description": "d", "points": 2, "keywords": ["photosynthesis"]}]}}

write_case = st.one_of(
    st.tuples(st.just("exam"), st.sampled_from(EXAM_TEXT), unstorable_text.map(lambda v: (v, False))),
    st.tuples(st.just("exam"), st.sampled_from(EXAM_LABELS), bad_label.map(lambda v: (v, False))),
    st.tuples(st.just("exam"), st.sampled_from(EXAM_NUMBERS), bad_number.map(lambda v: (v, True))),
    st.tuples(st.just("exam"), st.sampled_from(EXAM_TEXT), not_text.map(lambda v: (v, True))),
    st.tuples(st.just("exam"), st.sampled_from(EXAM_NUMBERS), not_number.map(lambda v: (v, True))),
    st.tuples(st.just("rubric"), st.sampled_from(RUBRIC_TEXT), unstorable_text.map(lambda v: (v, False))),
    st.tuples(st.just("rubric"), st.sampled_from(RUBRIC_NUMBERS), bad_number.map(lambda v: (v, True))),
    st.tuples(st.just("submission"), st.sampled_from([("student_id",), ("external_id",)]),
              st.one_of(bad_label.map(lambda v: (v, False)), not_text.map(lambda v: (v, True)))),
    st.tuples(st.just("submission"), st.sampled_from([("answers", "q3"), ("answers", "q4"), ("answers", "q1")]),
              st.one_of(unstorable_text.map(lambda v: (v, False)),
                        unstorable_text.map(lambda v: ([v], False)),
                        unstorable_text.map(lambda v: ({"k": [1, v]}, False)),
                        deep.map(lambda v: (v, True)))),
    st.tuples(st.just("submission"), st.just(("answers", "q2")),
              st.one_of(bad_number.map(lambda v: (v, True)), st.just(("NaN", True)))),
    st.tuples(st.just("review"), st.sampled_from([("reason",), ("overrides", "q1", "feedback")]),
              unstorable_text.map(lambda v: (v, False))),
    st.tuples(st.just("review"), st.just(("overrides", "q1", "score")),
              st.one_of(bad_number.map(lambda v: (v, True)), not_number.map(lambda v: (v, True)))),
    st.tuples(st.just("retry"), st.just(("reason",)), unstorable_text.map(lambda v: (v, False))),
)


@pytest.fixture
async def stored(api, bearer, pg_admin_url, temporal_client) -> dict[str, Any]:
    """A tenant with an exam and a submission, and a way to read back everything it stored."""
    tenant = new_tenant()
    headers = bearer(tenant)
    exam_id = (await api.post("/v1/exams", json=exam_body(), headers=headers)).json()["id"]
    sub = await api.post("/v1/submissions", headers=headers,
                         json={"exam_id": exam_id, "student_id": "s-1", "answers": GOOD_ANSWERS})
    await temporal_client.get_workflow_handle(sub.json()["workflow_id"]).terminate("not graded in this test")

    async def snapshot() -> tuple[Any, ...]:
        async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
            counts = []
            for table in TABLES:
                cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant,))
                counts.append((table, (await cur.fetchone())[0]))
        exam = (await api.get(f"/v1/exams/{exam_id}", headers=headers)).json()
        view = (await api.get(f"/v1/submissions/{sub.json()['submission_id']}", headers=headers)).json()
        return tuple(counts), exam, view

    return {"tenant": tenant, "headers": headers, "exam_id": exam_id, "submission_id": sub.json()["submission_id"],
            "snapshot": snapshot, "before": await snapshot()}


def _assert_refused(resp: Any, field: str) -> None:
    assert 400 <= resp.status_code < 500, (field, resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM), resp.text
    fields = [e["field"] for e in resp.json().get("errors", [])]
    assert any(f == field or f.startswith((field + ".", field + "[")) for f in fields), (field, resp.json())


@given(case=write_case)
async def test_hostile_writes_are_refused_naming_the_field(api, stored, case) -> None:
    route, path, (value, raw) = case
    headers = {**stored["headers"], "Content-Type": "application/json"}
    sid, exam_id = stored["submission_id"], stored["exam_id"]
    if route == "exam":
        resp = await api.post("/v1/exams", content=render(exam_body(), path, value, raw=raw), headers=headers)
        field = field_of(path)
    elif route == "rubric":
        qid, inner = path
        resp = await api.put(f"/v1/exams/{exam_id}/questions/{qid}/rubric", headers=headers,
                             content=render(RUBRICS[qid], inner, value, raw=raw))
        field = field_of(inner)
    elif route == "submission":
        body = {"exam_id": exam_id, "student_id": "s-2", "answers": dict(GOOD_ANSWERS), "external_id": "x-1"}
        resp = await api.post("/v1/submissions", content=render(body, path, value, raw=raw), headers=headers)
        field = field_of(path)
    elif route == "review":
        body = {"overrides": {"q1": {"score": 1, "feedback": "ok"}}, "reason": "appeal"}
        resp = await api.post(f"/v1/submissions/{sid}/review", content=render(body, path, value, raw=raw),
                              headers=headers)
        field = field_of(path)
    else:
        resp = await api.post(f"/v1/submissions/{sid}/retry", content=render({"reason": "r"}, path, value, raw=raw),
                              headers=headers)
        field = field_of(path)
    _assert_refused(resp, field)
    assert await stored["snapshot"]() == stored["before"]


def _cursor(sort_by: str, value: Any, row_id: Any) -> str:
    raw = json.dumps({"s": sort_by, "o": "desc", "v": value, "i": row_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


bad_cursor = st.one_of(
    st.tuples(st.sampled_from(["created_at", "updated_at"]),
              st.one_of(st.sampled_from(["2026-W09-7", "2026-03-01T00:00:00", "0001-01-01T00:00:00+20:00",
                                         "not a date", "9999-12-31T23:59:59-23:59"]), unstorable_text),
              st.just(str(uuid.UUID(int=1)))),
    st.tuples(st.just("total"), st.one_of(st.sampled_from(["sNaN", "NaN", "-Infinity", "1e1000000", "1e-99999"]),
                                          unstorable_text, st.integers().map(str).map(lambda s: s + "x")),
              st.just(str(uuid.UUID(int=2)))),
    st.tuples(st.sampled_from(["student_id", "status"]), unstorable_text, st.just(str(uuid.UUID(int=3)))),
    st.tuples(st.sampled_from(["created_at", "total", "student_id"]), st.just("1"),
              st.one_of(unstorable_text, st.text(max_size=40).filter(lambda s: not _is_uuid(s)))),
    st.tuples(st.sampled_from(["created_at", "total"]), st.one_of(st.integers(), st.lists(st.integers()),
                                                                  st.none()), st.just(str(uuid.UUID(int=4)))),
)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


query_case = st.one_of(
    st.tuples(st.just("student_id"), st.tuples(_text, st.sampled_from(["\x00", "\x01", "\n", "\x1b"]), _text)
              .map("".join)),
    st.tuples(st.sampled_from(["min_total", "max_total"]),
              st.sampled_from(["NaN", "Infinity", "-inf", "1e309", "9" * 400, "x"])),
    st.tuples(st.sampled_from(["page", "page_size"]), st.sampled_from(["0", "-1", "9" * 400, "1.5", "NaN", "x"])),
    st.tuples(st.sampled_from(["created_after", "created_before"]),
              st.sampled_from(["0001-01-01T00:00:00+20:00", "not a date", "2026-13-01", "\x00", "9" * 400])),
    st.tuples(st.just("exam_id"), st.sampled_from(["x", "\x00", "urn:uuid:", "1" * 33])),
    st.tuples(st.just("cursor"), bad_cursor),
)


@given(case=query_case)
async def test_hostile_list_parameters_are_refused_naming_the_parameter(api, stored, case) -> None:
    name, value = case
    params: dict[str, str] = {}
    if name == "cursor":
        sort_by, cursor_value, row_id = value
        params = {"cursor": _cursor(sort_by, cursor_value, row_id), "sort_by": sort_by}
    else:
        params = {name: value}
    resp = await api.get("/v1/submissions", params=params, headers=stored["headers"])
    _assert_refused(resp, name)
    assert await stored["snapshot"]() == stored["before"]
