# ruff: noqa: F811 - pytest fixtures are imported from the API conftest and the workflow harness
"""Properties 7 and 11 at the worker level, through the real API, real workers and real services.

7. A rubric change (``PUT /v1/exams/{id}/questions/{qid}/rubric``) broadcasts an invalidation that
   every worker's :class:`infra.stores.rubrics.RubricCache` applies: each drops the exam, the next
   read returns the new version and hash, and a grading started after the change is graded with
   the new rubric (``grading_results.rubric_version`` and the score it gives).
11. The hash a worker serves for a new rubric is the one precomputed at creation: equal to
   :func:`agents.rubric.rubric_hash`, to ``rubric_versions.rubric_hash`` and to the Redis copy;
   a second read comes from the worker's memory without touching PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.worker import Worker

from activities.agent import AgentActivities
from activities.grading import GradingActivities
from agents.rubric import Question, rubric_hash
from infra.cache.keys import rubric_hash_key
from infra.stores import grading
from infra.stores.grading import Conn, ExamQuestions
from infra.stores.rubrics import RubricCache
from tests.integration.api.conftest import (  # noqa: F401 - fixtures
    api_url,
    auth_headers,
    client,
)
from tests.integration.workflows.harness import gf_settings, saver  # noqa: F401 - fixtures
from tests.property.rubric_exams import three_type_questions
from worker import workflow_runner
from workflows.batch import BatchGradingWorkflow
from workflows.grading import GradingWorkflow

STORED_HASH_SQL = "SELECT rubric_hash FROM rubric_versions WHERE exam_id = %s AND question_id = %s AND version = %s"
RESULTS_SQL = "SELECT question_id, score, rubric_version FROM grading_results WHERE submission_id = %s"
OPTIONS = ["a", "b", "c"]


class CountingLoader:
    """The real PostgreSQL loader of a worker's cache, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, conn: Conn, exam_id: str) -> ExamQuestions:
        self.calls += 1
        return await grading.load_exam_questions(conn, exam_id)


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.01)


@pytest.fixture
async def worker_cache(pools, gf_settings) -> AsyncIterator[RubricCache]:
    """The rubric cache of a worker process (own listener and Redis connection), counting PG loads."""
    async with RubricCache(pools, gf_settings, loader=CountingLoader()) as cache:
        yield cache


@pytest.fixture
async def grading_worker(temporal_client, pools, saver, gf_settings, task_queue,
                         worker_cache) -> AsyncIterator[RubricCache]:
    """Orchestration + cognitive workers whose activities read rubrics through ``worker_cache``."""
    grading = GradingActivities(pools, gf_settings, rubric_cache=worker_cache)
    agent = AgentActivities(pools, saver, gf_settings, rubric_cache=worker_cache)
    orch = Worker(temporal_client, task_queue=task_queue, workflows=[GradingWorkflow, BatchGradingWorkflow],
                  workflow_runner=workflow_runner(),
                  activities=[grading.load_grading_context, grading.persist_grading_result,
                              grading.set_status, grading.mark_needs_intervention])
    cog = Worker(temporal_client, task_queue=f"{task_queue}-cog", activities=[agent.run_grading_agent])
    async with orch, cog:
        yield worker_cache


def _exam_body(correct: str) -> dict[str, Any]:
    return {"title": "rubric cache", "questions": [
        {"id": "q1", "type": "choice", "prompt": "Pick", "max_points": 2,
         "rubric": {"options": OPTIONS, "correct": [correct]}},
        {"id": "q2", "type": "numeric", "prompt": "Compute", "max_points": 3, "rubric": {"value": 42, "abs_tol": 0.5}},
    ]}


@given(workers=st.integers(2, 4), old=st.sampled_from(OPTIONS), new=st.sampled_from(OPTIONS),
       picked=st.sampled_from(OPTIONS))
async def test_property7_rubric_change_reaches_every_worker_and_the_next_grading(
        client, auth_headers, tenant_id, pools, gf_settings, temporal_client, grading_worker,
        workers, old, new, picked):
    headers = auth_headers(tenant_id)
    resp = await client.post("/v1/exams", json=_exam_body(old), headers=headers)
    assert resp.status_code == 201, resp.text
    exam_id = resp.json()["id"]
    others = [RubricCache(pools, gf_settings) for _ in range(workers - 1)]
    for cache in others:
        await cache.start()
    caches = [grading_worker, *others]
    try:
        for cache in caches:
            held = await cache.get(tenant_id, exam_id)
            assert held.rubric_versions == {"q1": 1, "q2": 1} and (tenant_id, exam_id) in cache

        changed = await client.put(f"/v1/exams/{exam_id}/questions/q1/rubric",
                                   json={"options": OPTIONS, "correct": [new]}, headers=headers)
        assert changed.status_code == 200, changed.text
        question = changed.json()
        assert question["rubric_version"] == 2
        sent = {k: v for k, v in question.items() if k not in ("rubric_version", "rubric_hash", "options")}
        assert question["rubric_hash"] == rubric_hash(Question.model_validate(sent))

        await _eventually(lambda: all((tenant_id, exam_id) not in cache for cache in caches))
        for cache in caches:
            served = await cache.get(tenant_id, exam_id)
            assert served.rubric_versions == {"q1": 2, "q2": 1}
            assert served.rubric_hashes["q1"] == question["rubric_hash"]
            assert served.questions[0].rubric.correct == [new]

        # A grading started after the change is graded against version 2 by the workers.
        sub = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s",
                                                         "answers": {"q1": picked, "q2": 42}}, headers=headers)
        assert sub.status_code == 202, sub.text
        handle = temporal_client.get_workflow_handle(sub.json()["workflow_id"])
        await asyncio.wait_for(handle.result(), 60)
        async with pools.transaction(tenant_id) as conn:
            rows = {r["question_id"]: r for r in await (await conn.execute(
                RESULTS_SQL, (sub.json()["submission_id"],))).fetchall()}
        assert rows["q1"]["rubric_version"] == 2 and rows["q2"]["rubric_version"] == 1
        assert float(rows["q1"]["score"]) == (2.0 if picked == new else 0.0)
    finally:
        for cache in others:
            await cache.stop()


@given(questions=three_type_questions)
async def test_property11_worker_serves_the_precomputed_hash_from_memory(
        client, auth_headers, tenant_id, pools, worker_cache, questions):
    resp = await client.post("/v1/exams", json={"title": "t", "questions": questions},
                             headers=auth_headers(tenant_id))
    assert resp.status_code == 201, resp.text
    exam_id = resp.json()["id"]
    loader = worker_cache.loader
    assert isinstance(loader, CountingLoader)
    calls, hits = loader.calls, worker_cache.stats.hits

    served = await worker_cache.get(tenant_id, exam_id)
    assert loader.calls == calls + 1
    async with pools.transaction(tenant_id) as conn:
        for sent in questions:
            expected = rubric_hash(Question.model_validate(sent))
            row = await (await conn.execute(STORED_HASH_SQL, (exam_id, sent["id"], 1))).fetchone()
            in_redis = json.loads(await pools.redis.get(rubric_hash_key(tenant_id, exam_id, sent["id"], 1)))
            assert served.rubric_hashes[sent["id"]] == expected == row["rubric_hash"] == in_redis

    again = await worker_cache.get(tenant_id, exam_id)
    assert again is served
    assert loader.calls == calls + 1  # PostgreSQL not touched
    assert worker_cache.stats.hits == hits + 1
