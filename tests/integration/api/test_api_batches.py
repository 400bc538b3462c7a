# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""``POST /v1/exams/{id}/batches`` and ``GET /v1/batches/{id}``: a class graded through one batch workflow.

Real API server, PostgreSQL, Redis, Temporal and workers: the children are the submissions'
``grade-<id>`` workflows, at most ``max_concurrent`` at once by the Temporal server's own record.
"""

from __future__ import annotations

import asyncio
import uuid

from activities.agent import GradeCall
from infra.temporal.starter import SUBMISSION_KEY, TENANT_KEY, TRACE_KEY
from tests.integration.api.conftest import question
from tests.integration.workflows.harness import gf_settings, grading_workers, saver, seed_submission  # noqa: F401
from tests.property.test_grading_batch import max_overlap
from workflows.batch import BatchOutput

BATCH_ITEMS_SQL = "SELECT count(*) AS n FROM batch_items"
BATCHES_SQL = "SELECT count(*) AS n FROM batches"


def _class(n: int, prefix: str = "lms") -> list[dict]:
    return [{"student_id": f"s-{i}", "answers": {"q1": "b"}, "external_id": f"{prefix}-{i}"} for i in range(n)]


async def _exam(client, headers) -> str:
    body = {"title": "Quiz", "questions": [question("q1", "choice")]}
    created = await client.post("/v1/exams", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def _wait_done(client, batch_id: str, headers) -> dict:
    view: dict = {}
    for _ in range(600):
        view = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
        if view.get("source") == "database" and view.get("done") == view.get("total"):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not finish: {view}")


async def _count(pools, tenant_id: str, sql: str) -> int:
    async with pools.transaction(tenant_id) as conn:
        return (await (await conn.execute(sql)).fetchone())["n"]


async def test_a_class_is_graded_through_one_bounded_batch(client, auth_headers, tenant_id, count_rows,
                                                           temporal_client, pools, saver, gf_settings, task_queue):
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    exam_id = await _exam(client, reviewer)
    body = {"submissions": _class(12), "max_concurrent": 3}
    key = {"Idempotency-Key": f"batch-{uuid.uuid4()}"}

    async def slow(call: GradeCall) -> None:
        await asyncio.sleep(0.2)

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, grade_hook=slow):
        accepted = await client.post(f"/v1/exams/{exam_id}/batches", json=body, headers=reviewer | key)
        assert accepted.status_code == 202, accepted.text
        batch = accepted.json()
        assert batch["total"] == 12 and batch["max_concurrent"] == 3 and len(set(batch["submission_ids"])) == 12
        assert batch["workflow_id"] == f"batch-{batch['batch_id']}"
        assert accepted.headers["Location"] == f"/v1/batches/{batch['batch_id']}"
        view = await _wait_done(client, batch["batch_id"], reviewer)
        rows_after = await count_rows(tenant_id)

        again = await client.post(f"/v1/exams/{exam_id}/batches", json=body, headers=reviewer | key)
        assert again.status_code == 202 and again.json() == batch  # the stored reply: nothing new
        assert await count_rows(tenant_id) == rows_after
        assert await _count(pools, tenant_id, BATCHES_SQL) == 1
        # Without the key, the same class (same external ids) reuses its submissions: no duplicates.
        other = await client.post(f"/v1/exams/{exam_id}/batches", json=body, headers=reviewer)
        assert other.status_code == 202, other.text
        assert other.json()["batch_id"] != batch["batch_id"]
        assert sorted(other.json()["submission_ids"]) == sorted(batch["submission_ids"])
        assert (await count_rows(tenant_id))["submissions"] == 12
        rerun = await _wait_done(client, other.json()["batch_id"], reviewer)  # finished gradings are not re-run
        assert rerun["counts"] == {"completed": 12}

    assert view["counts"] == {"completed": 12} and view["percentage"] == 100.0 and view["done"] == 12
    assert view["exam_id"] == exam_id and view["max_concurrent"] == 3
    out = await temporal_client.get_workflow_handle(batch["workflow_id"], result_type=BatchOutput).result()
    assert out.statuses == dict.fromkeys(batch["submission_ids"], "completed")
    assert 1 <= out.max_running <= 3
    spans = []
    for sid in batch["submission_ids"]:
        sub = (await client.get(f"/v1/submissions/{sid}", headers=reviewer)).json()
        assert sub["status"] == "completed" and sub["workflow_id"] == f"grade-{sid}"
        desc = await temporal_client.get_workflow_handle(f"grade-{sid}").describe()
        assert desc.parent_id == batch["workflow_id"]
        memo = await desc.memo()
        assert memo["tenant_id"] == tenant_id and memo["batch_id"] == batch["batch_id"]
        assert memo["trace_id"] == batch["trace_id"]
        attrs = desc.typed_search_attributes
        assert attrs.get(TENANT_KEY) == tenant_id and attrs.get(SUBMISSION_KEY) == sid
        assert attrs.get(TRACE_KEY) == batch["trace_id"]
        spans.append((desc.start_time.timestamp(), desc.close_time.timestamp()))  # type: ignore[union-attr]
    assert max_overlap(spans) <= 3  # the server's record of the children, not the workflow's counter


async def test_existing_submissions_by_id(client, auth_headers, tenant_id, temporal_client, pools, saver,
                                          gf_settings, task_queue):
    admin = auth_headers(tenant_id)
    exam_id = await _exam(client, admin)
    seeded = [await seed_submission(pools, tenant_id, exam_id, {"q1": "b"}) for _ in range(4)]
    ids = [s.submission_id for s in seeded]
    release = asyncio.Event()
    started: list[str] = []

    async def held(call: GradeCall) -> None:
        started.append(call.submission_id)
        await release.wait()

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, grade_hook=held):
        accepted = await client.post(f"/v1/exams/{exam_id}/batches",
                                     json={"submission_ids": [i.upper() for i in ids], "max_concurrent": 2},
                                     headers=admin)
        assert accepted.status_code == 202, accepted.text
        batch_id = accepted.json()["batch_id"]
        assert accepted.json()["submission_ids"] == ids
        for _ in range(300):  # two gradings held in the agent: the running batch answers its query
            if len(set(started)) == 2:
                break
            await asyncio.sleep(0.1)
        running = (await client.get(f"/v1/batches/{batch_id}", headers=admin)).json()
        assert running["source"] == "temporal", running
        assert running["counts"] == {"running": 2, "pending": 2} and running["percentage"] == 0.0
        assert len(set(started)) == 2
        release.set()
        view = await _wait_done(client, batch_id, admin)
    assert view["counts"] == {"completed": 4} and view["percentage"] == 100.0


async def test_roles_tenants_and_bad_input(client, auth_headers, tenant_id, count_rows, app_settings):
    admin = auth_headers(tenant_id)
    exam_id = await _exam(client, admin)
    before = await count_rows(tenant_id)
    url = f"/v1/exams/{exam_id}/batches"

    submitter = auth_headers(tenant_id, roles=("submitter",))
    assert (await client.post(url, json={"submissions": _class(2)}, headers=submitter)).status_code == 403
    other = auth_headers(f"{tenant_id}-other")
    assert (await client.post(url, json={"submissions": _class(2)}, headers=other)).status_code == 404

    bad = _class(3)
    bad[1]["answers"] = {"q1": "z", "q9": "b"}
    refused = await client.post(url, json={"submissions": bad}, headers=admin)
    assert refused.status_code == 422, refused.text
    fields = {e["field"] for e in refused.json()["errors"]}
    assert fields == {"submissions[1].answers.q1", "submissions[1].answers.q9"}
    assert (await count_rows(tenant_id)) == before  # one bad answer stores nothing of the batch

    unknown = await client.post(url, json={"submission_ids": [str(uuid.uuid4())]}, headers=admin)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "submission_ids"
    assert (await client.post(url, json={}, headers=admin)).status_code == 422
    too_many = await client.post(url, json={"submissions": _class(501)}, headers=admin)
    assert too_many.status_code in (413, 422)  # the body limit or the batch limit: never stored
    assert (await count_rows(tenant_id)) == before

    capped = await client.post(url, json={"submissions": _class(2), "max_concurrent": 10_000}, headers=admin)
    assert capped.status_code == 202, capped.text
    assert capped.json()["max_concurrent"] == app_settings.batch_max_concurrent
    batch_id = capped.json()["batch_id"]
    assert (await client.get(f"/v1/batches/{batch_id}", headers=admin)).status_code == 200
    assert (await client.get(f"/v1/batches/{batch_id}", headers=submitter)).status_code == 403
    assert (await client.get(f"/v1/batches/{batch_id}", headers=other)).status_code == 404
    assert (await client.get(f"/v1/batches/{uuid.uuid4()}", headers=admin)).status_code == 404


async def test_the_relay_leaves_a_batchs_submissions_to_the_batch(temporal_client, pools, tenant_id, task_queue):
    from datetime import UTC, datetime

    import pytest
    from temporalio.service import RPCError

    from infra.events.outbox import EventEnvelope
    from infra.temporal.starter import make_reconciler_handler
    from tests.integration.workflows.harness import choice, seed

    s = await seed(pools, tenant_id, [choice("q1")], {"q1": "b"})
    handler = make_reconciler_handler(temporal_client, task_queue=task_queue)
    payload = {"submission_id": s.submission_id, "exam_id": s.exam_id, "trace_id": s.trace_id}

    def event(extra: dict) -> EventEnvelope:
        return EventEnvelope(event_id=str(uuid.uuid4()), event_type="submission.received", tenant_id=tenant_id,
                             actor_id=None, target_type="submission", target_id=s.submission_id, version=1,
                             occurred_at=datetime.now(UTC), trace_id=s.trace_id, payload={**payload, **extra})

    await handler(event({"batch_id": str(uuid.uuid4())}))  # the batch workflow starts it, bounded
    with pytest.raises(RPCError):
        await temporal_client.get_workflow_handle(f"grade-{s.submission_id}").describe()
    await handler(event({}))  # a single submission: the relay starts it
    assert (await temporal_client.get_workflow_handle(f"grade-{s.submission_id}").describe()).id
    await temporal_client.get_workflow_handle(f"grade-{s.submission_id}").terminate("test over")


async def test_regrade_uses_the_current_rubric_and_keeps_reviewed_scores(client, auth_headers, tenant_id,
                                                                         temporal_client, pools, saver,
                                                                         gf_settings, task_queue):
    reviewer = auth_headers(tenant_id, roles=("reviewer",))
    body = {"title": "Quiz", "questions": [question("q1", "choice"), question("q2", "choice")]}
    exam_id = (await client.post("/v1/exams", json=body, headers=reviewer)).json()["id"]
    cls = [{"student_id": f"s-{i}", "answers": {"q1": "b", "q2": "b"}} for i in range(3)]

    async def scores(sid: str) -> tuple[float, dict]:
        view = (await client.get(f"/v1/submissions/{sid}", headers=reviewer)).json()
        return view["total"], {r["question_id"]: (r["score"], r["overridden"]) for r in view["results"]}

    async def finished(batch: dict) -> BatchOutput:
        return await temporal_client.get_workflow_handle(batch["workflow_id"], result_type=BatchOutput).result()

    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue):
        first = (await client.post(f"/v1/exams/{exam_id}/batches", json={"submissions": cls},
                                   headers=reviewer)).json()
        await finished(first)
        a, b, c = first["submission_ids"]
        first_run = (await temporal_client.get_workflow_handle(f"grade-{a}").describe()).run_id
        assert await scores(a) == (2.0, {"q1": (1.0, False), "q2": (1.0, False)})
        review = await client.post(f"/v1/submissions/{a}/review", json={"overrides": {"q2": {"score": 0.5}},
                                                                          "reason": "partial"}, headers=reviewer)
        assert review.status_code == 200, review.text
        new_rubric = {"options": ["a", "b", "c"], "correct": ["a"]}
        put = await client.put(f"/v1/exams/{exam_id}/questions/q1/rubric", json=new_rubric, headers=reviewer)
        assert put.status_code == 200 and put.json()["rubric_version"] == 2

        submitter = auth_headers(tenant_id, roles=("submitter",))
        scope = {"scope": "before_version", "rubric_version": 2, "max_concurrent": 2}
        assert (await client.post(f"/v1/exams/{exam_id}/regrade", json=scope, headers=submitter)).status_code == 403
        key = {"Idempotency-Key": f"regrade-{uuid.uuid4()}"}
        regrade = await client.post(f"/v1/exams/{exam_id}/regrade", json=scope, headers=reviewer | key)
        assert regrade.status_code == 202, regrade.text
        assert sorted(regrade.json()["submission_ids"]) == sorted([a, b, c])
        out = await finished(regrade.json())
        assert out.statuses == {a: "completed", b: "completed", c: "completed"}
        again = await client.post(f"/v1/exams/{exam_id}/regrade", json=scope, headers=reviewer | key)
        assert again.json() == regrade.json()  # the stored reply: no second regrade
        assert await scores(b) == (1.0, {"q1": (0.0, False), "q2": (1.0, False)})  # the current rubric
        assert await scores(a) == (0.5, {"q1": (0.0, False), "q2": (0.5, True)})  # the reviewer's score stands
        second_run = (await temporal_client.get_workflow_handle(f"grade-{a}").describe()).run_id
        assert second_run != first_run
        view = (await client.get(f"/v1/batches/{regrade.json()['batch_id']}", headers=reviewer)).json()
        assert view["kind"] == "regrade" and view["counts"] == {"completed": 3} and view["percentage"] == 100.0

        forced = await client.post(f"/v1/exams/{exam_id}/regrade",
                                   json={"scope": "ids", "submission_ids": [a], "override_reviewed": True},
                                   headers=reviewer)
        assert forced.status_code == 202 and forced.json()["submission_ids"] == [a]
        await finished(forced.json())
        assert await scores(a) == (1.0, {"q1": (0.0, False), "q2": (1.0, False)})

        unknown = await client.post(f"/v1/exams/{exam_id}/regrade",
                                    json={"scope": "ids", "submission_ids": [str(uuid.uuid4())]}, headers=reviewer)
        assert unknown.status_code == 422
        other = await client.post(f"/v1/exams/{exam_id}/regrade", json={"scope": "all"},
                                  headers=auth_headers(f"{tenant_id}-other"))
        assert other.status_code == 404
