# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""``GET /v1/submissions/{id}/history``: every score change, written with the change, through the real API.

Real API server, PostgreSQL, Redis, Temporal and workers: the agent's grades, a reviewer's override
and a regrade each leave their rows (old -> new, source, actor, rubric version, trace id) in order.
"""

from __future__ import annotations

from infra.security.tokens import mint_token
from tests.integration.api.conftest import question
from tests.integration.workflows.harness import gf_settings, grading_workers, saver  # noqa: F401
from workflows.batch import BatchOutput


def _token(settings, tenant_id: str, roles: list[str], sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(settings, tenant=tenant_id, roles=roles, sub=sub)}"}


async def _graded(client, temporal_client, headers: dict[str, str], exam_id: str, answers: dict) -> dict:
    sub = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": "s1", "answers": answers},
                            headers=headers)
    assert sub.status_code == 202, sub.text
    await temporal_client.get_workflow_handle(sub.json()["workflow_id"]).result()
    return sub.json()


async def _all(client, sid: str, headers: dict[str, str], page_size: int = 100) -> list[dict]:
    rows: list[dict] = []
    cursor = None
    while True:
        params = {"page_size": page_size, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"/v1/submissions/{sid}/history", params=params, headers=headers)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= page_size
        rows += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return rows


async def test_history_shows_agent_review_and_regrade_in_order(client, app_settings, tenant_id, temporal_client,
                                                               pools, saver, gf_settings, task_queue):
    reviewer = _token(app_settings, tenant_id, ["reviewer"], "teacher-1")
    lms = _token(app_settings, tenant_id, ["submitter"], "lms-1")
    body = {"title": "Quiz", "questions": [question("q1", "choice"), question("q2", "choice")]}
    exam_id = (await client.post("/v1/exams", json=body, headers=reviewer)).json()["id"]
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue):
        sub = await _graded(client, temporal_client, lms, exam_id, {"q1": "b", "q2": "a"})
        sid = sub["submission_id"]
        agent = await _all(client, sid, lms)
        assert [(r["question_id"], r["old_score"], r["new_score"], r["source"], r["rubric_version"], r["trace_id"])
                for r in agent] == [("q1", None, 1.0, "agent", 1, sub["trace_id"]),
                                    ("q2", None, 0.0, "agent", 1, sub["trace_id"])]
        review = await client.post(f"/v1/submissions/{sid}/review",
                                   json={"overrides": {"q2": {"score": 0.5}}, "reason": "close enough"},
                                   headers=reviewer)
        assert review.status_code == 200, review.text
        put = await client.put(f"/v1/exams/{exam_id}/questions/q1/rubric",
                               json={"options": ["a", "b", "c"], "correct": ["a"]}, headers=reviewer)
        assert put.status_code == 200, put.text
        regrade = await client.post(f"/v1/exams/{exam_id}/regrade",
                                    json={"scope": "ids", "submission_ids": [sid], "override_reviewed": True},
                                    headers=reviewer)
        assert regrade.status_code == 202, regrade.text
        await temporal_client.get_workflow_handle(regrade.json()["workflow_id"], result_type=BatchOutput).result()

    rows = await _all(client, sid, reviewer)
    assert [(r["question_id"], r["old_score"], r["new_score"], r["source"], r["actor_id"], r["reason"])
            for r in rows] == [
        ("q1", None, 1.0, "agent", "agent", None), ("q2", None, 0.0, "agent", "agent", None),
        ("q2", 0.0, 0.5, "review", "teacher-1", "close enough"),
        ("q1", 1.0, 0.0, "regrade", "agent", None), ("q2", 0.5, 0.0, "regrade", "agent", None)]
    assert rows[3]["rubric_version"] == 2 and rows[4]["rubric_version"] == 1
    versions = [r["submission_version"] for r in rows]
    assert versions == sorted(versions) and versions[2] < versions[3]
    view = (await client.get(f"/v1/submissions/{sid}", headers=reviewer)).json()
    assert {r["question_id"]: r["score"] for r in view["results"]} == {"q1": 0.0, "q2": 0.0}
    assert await _all(client, sid, reviewer, page_size=1) == rows  # paged one row at a time: the same rows

    other_lms = _token(app_settings, tenant_id, ["submitter"], "lms-2")
    assert (await client.get(f"/v1/submissions/{sid}/history", headers=other_lms)).status_code == 404
    other_tenant = _token(app_settings, f"{tenant_id}-other", ["admin"], "admin-x")
    assert (await client.get(f"/v1/submissions/{sid}/history", headers=other_tenant)).status_code == 404
    bad = await client.get(f"/v1/submissions/{sid}/history", params={"cursor": "abc"}, headers=reviewer)
    assert bad.status_code == 422 and "cursor" in bad.text
