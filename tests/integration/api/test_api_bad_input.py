"""Bad input through the real API: every case of issue 9 is a 4xx problem naming the field, never a 500.

NUL characters and lone surrogates in stored strings, non-finite and huge numbers, forged cursors,
malformed JSON and a missing Content-Type. After all of them the tenant's stored rows are unchanged.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from tests.integration.api.conftest import GOOD_ANSWERS, exam_body

PROBLEM = "application/problem+json"
HUGE_INT = "9" * 400
"""A JSON integer far beyond a float (``float()`` raises ``OverflowError``)."""


def raw_json(value: Any, **raw: str) -> bytes:
    """JSON text of ``value`` (NaN/Infinity and lone surrogates as Python's encoder writes them) with
    the string placeholders ``"@name@"`` replaced by ``raw[name]`` verbatim (e.g. ``1e309``)."""
    text = json.dumps(value, allow_nan=True)
    for name, literal in raw.items():
        text = text.replace(f'"@{name}@"', literal)
    return text.encode()


def _exam(**changes: Any) -> dict[str, Any]:
    body = exam_body()
    for path, value in changes.items():
        target: Any = body
        *parents, last = path.split("/")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value
    return body


def _cursor(**fields: Any) -> str:
    data = {"s": "created_at", "o": "desc", "v": "2026-03-01T00:00:00+00:00", "i": str(uuid.uuid4()), **fields}
    raw = json.dumps(data, separators=(",", ":")).encode()  # ensure_ascii: lone surrogates as \udc00
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


EXAM_CASES = [
    ("title NUL", _exam(title="Bio\x00logy"), {}, "title"),
    ("title control", _exam(title="Bio\x1blogy"), {}, "title"),
    ("question id NUL", _exam(**{"questions/0/id": "q\x00"}), {}, "questions[0].id"),
    ("prompt NUL", _exam(**{"questions/0/prompt": "Pick\x00"}), {}, "questions[0].prompt"),
    ("prompt surrogate", _exam(**{"questions/0/prompt": "Pick \udc00"}), {}, "questions[0].prompt"),
    ("option surrogate", _exam(**{"questions/0/rubric/options/0": "\ud800"}), {}, "questions[0].rubric.options[0]"),
    ("keyword NUL", _exam(**{"questions/2/rubric/criteria/0/keywords/0": "photo\x00"}), {},
     "questions[2].rubric.criteria[0].keywords[0]"),
    ("criterion description surrogate", _exam(**{"questions/3/rubric/criteria/0/description": "\udfff"}), {},
     "questions[3].rubric.criteria[0].description"),
    ("max_points Infinity", _exam(**{"questions/0/max_points": float("inf")}), {}, "questions[0].max_points"),
    ("max_points 1e309", _exam(**{"questions/0/max_points": "@big@"}), {"big": "1e309"}, "questions[0].max_points"),
    ("max_points huge int", _exam(**{"questions/0/max_points": "@big@"}), {"big": HUGE_INT},
     "questions[0].max_points"),
    ("value NaN", _exam(**{"questions/1/rubric/value": float("nan")}), {}, "questions[1].rubric.value"),
    ("value -Infinity", _exam(**{"questions/1/rubric/value": float("-inf")}), {}, "questions[1].rubric.value"),
    ("abs_tol Infinity", _exam(**{"questions/1/rubric/abs_tol": float("inf")}), {}, "questions[1].rubric.abs_tol"),
    ("rel_tol 1e309", _exam(**{"questions/1/rubric/rel_tol": "@big@"}), {"big": "1e309"},
     "questions[1].rubric.rel_tol"),
    ("criterion points NaN", _exam(**{"questions/2/rubric/criteria/0/points": float("nan")}), {},
     "questions[2].rubric.criteria[0].points"),
    ("min_matches huge int", _exam(**{"questions/2/rubric/criteria/0/min_matches": "@big@"}), {"big": HUGE_INT},
     "questions[2].rubric.criteria[0].min_matches"),
]


def _submission(exam_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"exam_id": exam_id, "student_id": "s-1", "answers": dict(GOOD_ANSWERS)}
    for key, value in changes.items():
        if key.startswith("answers/"):
            body["answers"][key.split("/", 1)[1]] = value
        else:
            body[key] = value
    return body


SUBMISSION_CASES = [
    ("student_id NUL", {"student_id": "s\x00"}, {}, "student_id"),
    ("student_id newline", {"student_id": "s\n1"}, {}, "student_id"),
    ("external_id NUL", {"external_id": "lms\x00"}, {}, "external_id"),
    ("text answer NUL", {"answers/q3": "Plants \x00"}, {}, "answers.q3"),
    ("text answer surrogate", {"answers/q4": "Because \udc00"}, {}, "answers.q4"),
    ("nested answer surrogate", {"answers/q1": ["b", "\udc00"]}, {}, "answers.q1"),
    ("answer key NUL", {"answers/q\x00": "b"}, {}, "answers"),
    ("numeric answer huge int", {"answers/q2": "@big@"}, {"big": HUGE_INT}, "answers.q2"),
    ("numeric answer 1e309", {"answers/q2": "@big@"}, {"big": "1e309"}, "answers.q2"),
    ("numeric answer NaN", {"answers/q2": float("nan")}, {}, "answers.q2"),
    ("deep answer", {"answers/q3": "@deep@"}, {"deep": "[" * 60 + "]" * 60}, "answers.q3"),
]


async def _assert_problem(resp: Any, field: str, status: int = 422) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    fields = [e["field"] for e in body.get("errors", [])]
    assert any(f == field or f.startswith(field + ".") for f in fields), (field, body)
    return body


@pytest.fixture
async def seeded(client, auth_headers, tenant_id, temporal_client) -> dict[str, Any]:
    """An exam and a submission of the tenant, read back before the bad input."""
    headers = auth_headers(tenant_id)
    exam = (await client.post("/v1/exams", json=exam_body(), headers=headers)).json()
    sub = await client.post("/v1/submissions", json=_submission(exam["id"]), headers=headers)
    assert sub.status_code == 202, sub.text
    await temporal_client.get_workflow_handle(sub.json()["workflow_id"]).terminate("not graded in this test")
    return {"exam": exam, "submission_id": sub.json()["submission_id"]}


async def _snapshot(client, headers, count_rows, tenant_id, seeded) -> tuple:
    exam = (await client.get(f"/v1/exams/{seeded['exam']['id']}", headers=headers)).json()
    sub = (await client.get(f"/v1/submissions/{seeded['submission_id']}", headers=headers)).json()
    return await count_rows(tenant_id), exam, sub


async def test_bad_exams_and_rubrics_are_refused_naming_the_field(client, auth_headers, tenant_id, count_rows,
                                                                 seeded) -> None:
    headers = {**auth_headers(tenant_id), "Content-Type": "application/json"}
    before = await _snapshot(client, headers, count_rows, tenant_id, seeded)
    for name, body, raw, field in EXAM_CASES:
        resp = await client.post("/v1/exams", content=raw_json(body, **raw), headers=headers)
        await _assert_problem(resp, field)
        assert resp.status_code == 422, name
    exam_id = seeded["exam"]["id"]
    for body, raw, field in [
        ({"criteria": [{"id": "c1", "description": "d", "points": 2, "keywords": ["a\x00"]}]}, {},
         "criteria[0].keywords[0]"),
        ({"value": float("inf"), "abs_tol": 0.5}, {}, "value"),
        ({"value": 42, "abs_tol": "@big@"}, {"big": "1e309"}, "abs_tol"),
        ({"options": ["a", "\udc00"], "correct": ["a"]}, {}, "options[1]"),
    ]:
        qid = "q3" if "criteria" in body else "q2" if "value" in body else "q1"
        resp = await client.put(f"/v1/exams/{exam_id}/questions/{qid}/rubric", content=raw_json(body, **raw),
                                headers=headers)
        await _assert_problem(resp, field)
    resp = await client.put(f"/v1/exams/{exam_id}/questions/q%00/rubric", json={"options": ["a"], "correct": ["a"]},
                            headers=headers)
    await _assert_problem(resp, "question_id")
    assert await _snapshot(client, headers, count_rows, tenant_id, seeded) == before


async def test_bad_submissions_are_refused_naming_the_field(client, auth_headers, tenant_id, count_rows,
                                                           seeded) -> None:
    headers = {**auth_headers(tenant_id), "Content-Type": "application/json"}
    before = await _snapshot(client, headers, count_rows, tenant_id, seeded)
    for name, changes, raw, field in SUBMISSION_CASES:
        body = _submission(seeded["exam"]["id"], **changes)
        resp = await client.post("/v1/submissions", content=raw_json(body, **raw), headers=headers)
        assert resp.status_code == 422, (name, resp.text)
        await _assert_problem(resp, field)
    assert await _snapshot(client, headers, count_rows, tenant_id, seeded) == before


async def test_unreadable_bodies_say_what_is_wrong_and_where(client, auth_headers, tenant_id, seeded) -> None:
    headers = auth_headers(tenant_id)
    text = '{"title": "Biology", "questions": [] "x": 1}'
    resp = await client.post("/v1/exams", content=text, headers={**headers, "Content-Type": "application/json"})
    body = await _assert_problem(resp, "body")
    assert body["errors"][0]["message"] == "invalid JSON at line 1 column 38: Expecting ',' delimiter"
    assert "body: invalid JSON at line 1 column 38" in body["detail"]

    multi = '{\n  "title": "Biology",\n  "questions": [\n}'
    resp = await client.post("/v1/exams", content=multi, headers={**headers, "Content-Type": "application/json"})
    assert (await _assert_problem(resp, "body"))["errors"][0]["message"].startswith("invalid JSON at line 4 column 1")

    no_type = await client.post("/v1/exams", content=json.dumps(exam_body()), headers=headers)
    body = await _assert_problem(no_type, "body")
    assert "Content-Type: application/json" in body["errors"][0]["message"]
    assert "Content-Type: application/json" in body["detail"]

    not_object = await client.post("/v1/exams", json=[1, 2], headers=headers)
    assert (await _assert_problem(not_object, "body"))["errors"][0]["message"] == "must be a JSON object"

    nested = "[" * 100_000 + "]" * 100_000
    deep = f'{{"exam_id": "{seeded["exam"]["id"]}", "student_id": "s", "answers": {{"q3": {nested}}}}}'
    resp = await client.post("/v1/submissions", content=deep, headers={**headers, "Content-Type": "application/json"})
    assert (await _assert_problem(resp, "body", status=400))["errors"][0]["message"] == "nests too deeply"


async def test_bad_paths_and_list_parameters_are_refused(client, auth_headers, tenant_id, count_rows,
                                                         seeded) -> None:
    headers = auth_headers(tenant_id)
    before = await _snapshot(client, headers, count_rows, tenant_id, seeded)
    for path, field in [("/v1/submissions/%00", "submission_id"), ("/v1/submissions/%00/progress", "submission_id"),
                        ("/v1/exams/x%00", "exam_id")]:
        await _assert_problem(await client.get(path, headers=headers), field)
    for params, field in [({"student_id": "s\x00"}, "student_id"), ({"student_id": "s\t"}, "student_id"),
                          ({"min_total": "NaN"}, "min_total"), ({"max_total": "1e309"}, "max_total"),
                          ({"page": HUGE_INT}, "page"), ({"page_size": "-1"}, "page_size")]:
        await _assert_problem(await client.get("/v1/submissions", params=params, headers=headers), field)
    for params in ({"created_after": "2026-01-01T00:00:00+20:00"}, {"created_before": "2026-01-01T00:00:00-23:59"},
                   {"created_after": "0001-01-01T00:00:00+00:00"}):
        resp = await client.get("/v1/submissions", params=params, headers=headers)
        assert resp.status_code == 200, (params, resp.text)  # any offset Python accepts is compared as UTC
    resp = await client.get("/v1/submissions", params={"created_after": "0001-01-01T00:00:00+20:00"}, headers=headers)
    await _assert_problem(resp, "created_after")  # before year 1 in UTC
    assert await _snapshot(client, headers, count_rows, tenant_id, seeded) == before


FORGED_CURSORS = [
    ("urn:uuid id", {"i": f"urn:uuid:{uuid.uuid4()}"}, 200),
    ("braced upper-case id", {"i": "{" + str(uuid.uuid4()).upper() + "}"}, 200),
    ("+20:00 offset", {"v": "2026-03-01T00:00:00+20:00"}, 200),
    ("ISO week date with offset", {"v": "2026-W09-7T00:00:00+00:00"}, 200),
    ("ISO week date without offset", {"v": "2026-W09-7"}, 422),
    ("naive instant", {"v": "2026-03-01T00:00:00"}, 422),
    ("year 1 at +20:00", {"v": "0001-01-01T00:00:00+20:00"}, 422),
    ("NUL id", {"i": "\x00"}, 422),
    ("surrogate id", {"i": "\udc00"}, 422),
    ("number value", {"v": 5}, 422),
    ("sNaN total", {"s": "total", "v": "sNaN"}, 422),
    ("NaN total", {"s": "total", "v": "NaN"}, 422),
    ("Infinity total", {"s": "total", "v": "Infinity"}, 422),
    ("1e1000000 total", {"s": "total", "v": "1e1000000"}, 422),
    ("surrogate student", {"s": "student_id", "v": "\udc00"}, 422),
    ("NUL student", {"s": "student_id", "v": "s\x00"}, 422),
]


@pytest.mark.parametrize(("name", "fields", "status"), FORGED_CURSORS, ids=[c[0] for c in FORGED_CURSORS])
async def test_forged_cursors_are_a_422_or_a_page_never_a_500(client, auth_headers, tenant_id, seeded, name,
                                                              fields, status) -> None:
    sort_by = fields.get("s", "created_at")
    resp = await client.get("/v1/submissions", params={"cursor": _cursor(**fields), "sort_by": sort_by},
                            headers=auth_headers(tenant_id))
    if status == 200:
        assert resp.status_code == 200, resp.text
    else:
        await _assert_problem(resp, "cursor")
