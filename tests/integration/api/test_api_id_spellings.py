"""One id, many spellings: every spelling a UUID may take names one resource with one hot copy.

Upper case, braces, ``urn:uuid:`` and hyphen-less ids are read, reviewed and changed through the
real API; caches, invalidations, events and the workers' rubric cache only ever see the canonical id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
from temporalio.worker import Worker

from activities.agent import AgentActivities
from activities.grading import GradingActivities
from infra.stores.rubrics import RubricCache
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import serve_app
from tests.integration.api.test_api_review import GRADED, MAX_POINTS, complete_submission
from tests.integration.workflows.harness import saver  # noqa: F401 - fixture
from worker import workflow_runner
from workflows.batch import BatchGradingWorkflow
from workflows.grading import GradingWorkflow

FINAL = ("completed", "needs_review")


def spellings(resource_id: str) -> list[str]:
    """Every spelling of ``resource_id`` that names the same UUID."""
    u = uuid.UUID(resource_id)
    return [str(u), str(u).upper(), "{" + str(u) + "}", f"urn:uuid:{u}", u.hex, u.hex.upper()]


async def test_a_review_invalidates_the_copy_read_through_any_spelling(client, auth_headers, tenant_id, pools,
                                                                      temporal_client) -> None:
    headers = auth_headers(tenant_id)
    exam = await client.post("/v1/exams", json=exam_body(), headers=headers)
    sub = await client.post("/v1/submissions", json={"exam_id": exam.json()["id"].upper(), "student_id": "s1",
                                                     "answers": GOOD_ANSWERS}, headers=headers)
    sid = sub.json()["submission_id"]
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("graded by the test")
    await complete_submission(pools, tenant_id, sid, {q: (s, MAX_POINTS[q]) for q, s in GRADED.items()})

    for spelling in spellings(sid):  # every spelling reads the same submission, cached once
        resp = await client.get(f"/v1/submissions/{spelling}", headers=headers)
        assert resp.status_code == 200, (spelling, resp.text)
        assert resp.json()["id"] == sid and resp.json()["total"] == 7.0

    review = await client.post(f"/v1/submissions/{sid.upper()}/review", json={"overrides": {"q4": {"score": 5}}},
                               headers=auth_headers(tenant_id, roles=("reviewer",)))
    assert review.status_code == 200, review.text
    for spelling in spellings(sid):
        resp = await client.get(f"/v1/submissions/{spelling}", headers=headers)
        assert resp.json()["total"] == 9.0, spelling  # no stale copy under another spelling
    assert await pools.redis.keys(f"gf:{{{tenant_id}}}:submission:*") == [f"gf:{{{tenant_id}}}:submission:{sid}"]
    progress = await client.get(f"/v1/submissions/{sid.replace('-', '')}/progress", headers=headers)
    assert progress.json()["submission_id"] == sid


@asynccontextmanager
async def _workers_with_rubric_cache(temporal_client, pools, saver, settings,  # noqa: F811
                                     task_queue) -> AsyncIterator[RubricCache]:
    """Orchestration and cognitive workers sharing one in-process rubric cache, as ``worker.py`` runs them."""
    async with RubricCache(pools, settings) as rubric_cache:
        grading = GradingActivities(pools, settings, rubric_cache=rubric_cache)
        agent = AgentActivities(pools, saver, settings, None, rubric_cache=rubric_cache)
        async with (Worker(temporal_client, task_queue=task_queue, workflows=[GradingWorkflow, BatchGradingWorkflow],
                           workflow_runner=workflow_runner(),
                           activities=[grading.load_grading_context, grading.persist_grading_result,
                                       grading.set_status, grading.mark_needs_intervention]),
                    Worker(temporal_client, task_queue=f"{task_queue}-cog", activities=[agent.run_grading_agent])):
            yield rubric_cache


async def _graded(api: httpx.AsyncClient, headers: dict[str, str], exam_id: str) -> dict[str, Any]:
    resp = await api.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s1", "answers": GOOD_ANSWERS},
                          headers=headers)
    assert resp.status_code == 202, resp.text
    sid = resp.json()["submission_id"]
    for _ in range(600):
        view = (await api.get(f"/v1/submissions/{sid}", headers=headers)).json()
        if view["status"] in FINAL:
            return {r["question_id"]: r for r in view["results"]}
        await asyncio.sleep(0.1)
    raise AssertionError(f"{sid} was not graded")


async def test_a_rubric_changed_through_an_upper_case_id_reaches_every_cache(app_settings, temporal_client,
                                                                            task_queue, pools, saver,  # noqa: F811
                                                                            auth_headers, tenant_id,
                                                                            pg_admin_url) -> None:
    headers = auth_headers(tenant_id)
    async with (_workers_with_rubric_cache(temporal_client, pools, saver, app_settings, task_queue) as rubric_cache,
                serve_app(app_settings, temporal_client, task_queue) as url,
                httpx.AsyncClient(base_url=url, timeout=60) as api):
        exam_id = (await api.post("/v1/exams", json=exam_body(), headers=headers)).json()["id"]
        first = await _graded(api, headers, exam_id)  # fills the workers' cache (q1: "b" is correct)
        assert first["q1"]["score"] == 1.0 and first["q1"]["rubric_version"] == 1
        assert rubric_cache.stats.misses >= 1
        assert (await api.get(f"/v1/exams/{exam_id}", headers=headers)).status_code == 200  # the API's copy

        changed = await api.put(f"/v1/exams/{exam_id.upper()}/questions/q1/rubric", headers=headers,
                                json={"options": ["a", "b", "c"], "correct": ["c"]})
        assert changed.status_code == 200, changed.text
        assert changed.json()["rubric_version"] == 2

        exam = (await api.get(f"/v1/exams/{exam_id}", headers=headers)).json()
        q1 = next(q for q in exam["questions"] if q["id"] == "q1")
        assert q1["rubric_version"] == 2 and q1["rubric"]["correct"] == ["c"]  # the canonical copy was dropped
        for _ in range(500):  # the broadcast reaches the workers' cache (pub/sub, no fixed delay)
            if rubric_cache.stats.invalidated >= 1:
                break
            await asyncio.sleep(0.01)
        assert rubric_cache.stats.invalidated >= 1

        second = await _graded(api, headers, exam_id)
        assert second["q1"]["rubric_version"] == 2 and second["q1"]["score"] == 0.0  # graded against the new key
    async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
        cur = await conn.execute("SELECT target_id, payload->>'exam_id' FROM event_outbox "
                                 "WHERE tenant_id = %s AND event_type = 'rubric.changed'", (tenant_id,))
        assert await cur.fetchall() == [(f"{exam_id}:q1", exam_id)]  # the event names the canonical id
