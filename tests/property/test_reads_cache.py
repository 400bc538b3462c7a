"""Properties 6 and 11 through the real API: reads go Redis first, misses back-fill; rubric hashes are
precomputed at creation and served from the cache."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agents.rubric import Question, rubric_hash
from infra.cache.keys import rubric_hash_key, submission_key
from infra.stores.exams import read_rubric_hash
from infra.stores.submissions import load_submission
from tests.integration.api.conftest import (  # noqa: F401 - fixtures
    api_url,
    auth_headers,
    client,
    exam_body,
)
from tests.property.rubric_exams import three_type_questions

student_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
choice_answers = st.sampled_from(["a", "b", "c", ["a", "c"], ["b"]])
numbers = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(student=student_ids, pick=choice_answers, number=numbers, marker=st.text(max_size=20))
async def test_reads_go_redis_first_and_misses_back_fill(client, auth_headers, tenant_id, pools, student, pick,
                                                          number, marker):
    headers = auth_headers(tenant_id)
    exam = (await client.post("/v1/exams", json=exam_body(), headers=headers)).json()
    resp = await client.post("/v1/submissions", json={"exam_id": exam["id"], "student_id": student,
                                                      "answers": {"q1": pick, "q2": number}}, headers=headers)
    assert resp.status_code == 202, resp.text
    sid = resp.json()["submission_id"]
    key = submission_key(tenant_id, sid)
    await pools.redis.delete(key)

    miss = await client.get(f"/v1/submissions/{sid}", headers=headers)
    assert miss.headers["x-cache"] == "miss"
    in_pg = await load_submission(pools, tenant_id, sid)
    assert json.loads(await pools.redis.get(key)) == in_pg  # back-filled, equal to PostgreSQL
    assert miss.json()["student_id"] == student == in_pg["student_id"]

    only_in_redis = {**in_pg, "student_id": f"redis-only:{marker}", "error": marker}
    await pools.redis.set(key, json.dumps(only_in_redis))
    hit = await client.get(f"/v1/submissions/{sid}", headers=headers)
    assert hit.headers["x-cache"] == "hit"
    assert hit.json()["student_id"] == f"redis-only:{marker}" and hit.json()["error"] == marker


@given(questions=three_type_questions)
async def test_new_rubric_hash_is_precomputed_and_served_from_cache(client, auth_headers, tenant_id, pools, questions):
    resp = await client.post("/v1/exams", json={"title": "t", "questions": questions},
                             headers=auth_headers(tenant_id))
    assert resp.status_code == 201, resp.text
    exam = resp.json()
    from infra.cache.copies import Cache

    cache = Cache(pools.redis, ttl_seconds=60)
    for sent, got in zip(questions, exam["questions"], strict=True):
        expected = rubric_hash(Question.model_validate(sent))
        assert got["rubric_hash"] == expected
        key = rubric_hash_key(tenant_id, exam["id"], sent["id"], 1)
        assert json.loads(await pools.redis.get(key)) == expected  # precomputed at creation
        served, source = await read_rubric_hash(pools, cache, tenant_id, exam["id"], sent["id"], 1)
        assert (served, source) == (expected, "cache")
