"""Exams through the real API: creation with precomputed rubric hashes, reads, rubric versions, bad input."""

from __future__ import annotations

import psycopg
import pytest

from agents.rubric import Question, rubric_hash
from infra.cache.keys import exam_key, rubric_hash_key
from tests.integration.api.conftest import exam_body, question

PROBLEM = "application/problem+json"


async def test_create_exam_precomputes_and_caches_rubric_hashes(client, auth_headers, tenant_id, pools,
                                                                 pg_admin_url):
    body = exam_body()
    resp = await client.post("/v1/exams", json=body, headers=auth_headers(tenant_id))
    assert resp.status_code == 201, resp.text
    exam = resp.json()
    assert resp.headers["location"] == f"/v1/exams/{exam['id']}"
    assert [q["id"] for q in exam["questions"]] == ["q1", "q2", "q3", "q4"]
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        cur = await conn.execute("SELECT question_id, version, rubric_hash FROM rubric_versions "
                                 "WHERE exam_id = %s", (exam["id"],))
        stored = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
    for sent, got in zip(body["questions"], exam["questions"], strict=True):
        expected = rubric_hash(Question.model_validate(sent))
        assert got["rubric_version"] == 1 and got["rubric_hash"] == expected
        assert stored[sent["id"]] == (1, expected)
        cached = await pools.redis.get(rubric_hash_key(tenant_id, exam["id"], sent["id"], 1))
        assert cached == f'"{expected}"'


async def test_get_exam_reads_through_cache_and_is_tenant_scoped(client, auth_headers, tenant_id, new_tenant,
                                                                 pools):
    exam = (await client.post("/v1/exams", json=exam_body(), headers=auth_headers(tenant_id))).json()
    first = await client.get(f"/v1/exams/{exam['id']}", headers=auth_headers(tenant_id))
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    assert first.json() == exam
    assert await pools.redis.exists(exam_key(tenant_id, exam["id"]))
    second = await client.get(f"/v1/exams/{exam['id']}", headers=auth_headers(tenant_id))
    assert second.headers["x-cache"] == "hit" and second.json() == exam
    other = await client.get(f"/v1/exams/{exam['id']}", headers=auth_headers(new_tenant()))
    assert other.status_code == 404 and other.headers["content-type"] == PROBLEM
    malformed = await client.get("/v1/exams/not-a-uuid", headers=auth_headers(tenant_id))
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "exam_id"


async def test_rubric_change_creates_a_version_invalidates_and_emits_event(client, auth_headers, tenant_id,
                                                                          pools, pg_admin_url):
    exam = (await client.post("/v1/exams", json=exam_body(), headers=auth_headers(tenant_id))).json()
    await client.get(f"/v1/exams/{exam['id']}", headers=auth_headers(tenant_id))  # warm the cache
    new_rubric = {"options": ["a", "b", "c"], "correct": ["a", "c"], "partial_credit": False}
    resp = await client.put(f"/v1/exams/{exam['id']}/questions/q1/rubric", json=new_rubric,
                            headers=auth_headers(tenant_id))
    assert resp.status_code == 200, resp.text
    changed = resp.json()
    expected = rubric_hash(Question.model_validate({**question("q1"), "rubric": new_rubric}))
    assert changed["rubric_version"] == 2 and changed["rubric_hash"] == expected
    assert await pools.redis.get(rubric_hash_key(tenant_id, exam["id"], "q1", 2)) == f'"{expected}"'
    assert not await pools.redis.exists(exam_key(tenant_id, exam["id"]))
    again = await client.get(f"/v1/exams/{exam['id']}", headers=auth_headers(tenant_id))
    assert again.headers["x-cache"] == "miss"
    assert again.json()["questions"][0]["rubric_version"] == 2
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        cur = await conn.execute("SELECT event_type, payload FROM event_outbox WHERE tenant_id = %s "
                                 "AND event_type = 'rubric.changed'", (tenant_id,))
        events = await cur.fetchall()
        cur = await conn.execute("SELECT version FROM rubric_versions WHERE exam_id = %s AND question_id = 'q1' "
                                 "ORDER BY version", (exam["id"],))
        assert [r[0] for r in await cur.fetchall()] == [1, 2]
    assert len(events) == 1
    assert events[0][1]["version"] == 2 and events[0][1]["rubric_hash"] == expected


async def test_bad_rubric_change_is_rejected_and_nothing_changes(client, auth_headers, tenant_id, count_rows):
    exam = (await client.post("/v1/exams", json=exam_body(), headers=auth_headers(tenant_id))).json()
    before = await count_rows(tenant_id)
    resp = await client.put(f"/v1/exams/{exam['id']}/questions/q3/rubric",
                            json={"criteria": [{"id": "c1", "description": "x", "points": 1, "keywords": ["x"]}]},
                            headers=auth_headers(tenant_id))
    assert resp.status_code == 422 and resp.headers["content-type"] == PROBLEM
    assert resp.json()["errors"][0]["field"] == "rubric.criteria"
    missing = await client.put(f"/v1/exams/{exam['id']}/questions/nope/rubric", json={},
                               headers=auth_headers(tenant_id))
    assert missing.status_code == 404
    assert await count_rows(tenant_id) == before


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda b: b["questions"][2]["rubric"].update(criteria=[]), "questions[2].rubric.criteria"),
    (lambda b: b["questions"][0].update(max_points=-1), "questions[0].max_points"),
    (lambda b: b["questions"][1]["rubric"].update(value=None), "questions[1].rubric.value"),
    (lambda b: b["questions"][0]["rubric"].update(correct=["z"]), "questions[0].rubric.correct"),
    (lambda b: b["questions"][3].update(type="oral"), "questions[3].type"),
    (lambda b: b["questions"].append(question("q1")), "questions"),
    (lambda b: b.update(questions=[]), "questions"),
    (lambda b: b.update(title=""), "title"),
    (lambda b: b["questions"][0]["rubric"].update(bogus=1), "questions[0].rubric.bogus"),
])
async def test_invalid_exam_is_a_problem_naming_the_field(client, auth_headers, tenant_id, count_rows,
                                                          mutate, field):
    body = exam_body()
    mutate(body)
    before = await count_rows(tenant_id)
    resp = await client.post("/v1/exams", json=body, headers=auth_headers(tenant_id))
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert resp.headers["content-type"] == PROBLEM
    assert {"type", "title", "status", "detail", "instance"} <= problem.keys() and problem["status"] == 422
    assert field in [e["field"] for e in problem["errors"]], problem["errors"]
    assert await count_rows(tenant_id) == before


async def test_missing_tenant_is_401_and_huge_body_is_413(client, auth_headers, tenant_id, count_rows):
    resp = await client.post("/v1/exams", json=exam_body())
    assert resp.status_code == 401 and resp.headers["content-type"] == PROBLEM
    bad = await client.post("/v1/exams", json=exam_body(), headers={"X-Tenant-ID": "bad tenant!"})
    assert bad.status_code == 401
    huge = exam_body()
    huge["questions"][0]["prompt"] = "x" * (1024 * 1024 + 10)
    resp = await client.post("/v1/exams", json=huge, headers=auth_headers(tenant_id))
    assert resp.status_code == 413 and resp.headers["content-type"] == PROBLEM
    assert resp.json()["status"] == 413

    async def chunks():
        yield b'{"title": "t", "questions": ['
        for _ in range(1100):
            yield b" " * 1024
        yield b"]}"

    streamed = await client.post("/v1/exams", content=chunks(),
                                 headers={**auth_headers(tenant_id), "Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.headers["content-type"] == PROBLEM
    malformed = await client.post("/v1/exams", content=b"{not json",
                                  headers={**auth_headers(tenant_id), "Content-Type": "application/json"})
    assert malformed.status_code == 422 and malformed.headers["content-type"] == PROBLEM
    assert (await count_rows(tenant_id))["exams"] == 0
