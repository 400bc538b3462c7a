"""``/v1/admin/dlq``: a grading that ends in needs_intervention through real workers is a dead letter an
admin of its tenant lists, replays (the operator retry) to success, and sees resolved with its audit trail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from activities.agent import GradeCall
from api.app import create_app
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import gf_settings, grading_workers, saver  # noqa: F401 - fixtures

PROBLEM = "application/problem+json"


class BrokenGrader:
    """Fails every grading until repaired."""

    def __init__(self) -> None:
        self.broken = True

    async def __call__(self, call: GradeCall) -> None:
        if self.broken:
            raise RuntimeError("grader bug: rubric engine crashed")


@pytest.fixture
async def api(app_settings, temporal_client, task_queue) -> AsyncIterator[httpx.AsyncClient]:
    """The real app whose gradings give up after one failed agent run."""
    app = create_app(app_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog",
                                      "agent_max_attempts": 1, "retry_max_interval_s": 0.5})
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


async def _until(check, what: str, tries: int = 600):  # type: ignore[no-untyped-def]
    for _ in range(tries):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


async def test_a_needs_intervention_grading_is_a_dead_letter_replayed_to_success(
        api, auth_headers, app_settings, tenant_id, new_tenant, temporal_client, pools, saver, gf_settings,
        task_queue):
    from infra.security.tokens import mint_token

    admin = {"Authorization": f"Bearer {mint_token(app_settings, tenant=tenant_id, roles=['admin'], sub='ops-alice')}"}
    grader = BrokenGrader()
    async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue, grade_hook=grader):
        exam = (await api.post("/v1/exams", json=exam_body(), headers=admin)).json()
        accepted = await api.post("/v1/submissions", headers=admin,
                                  json={"exam_id": exam["id"], "student_id": "s-1", "answers": GOOD_ANSWERS})
        assert accepted.status_code == 202, accepted.text
        sid = accepted.json()["submission_id"]

        async def failed() -> bool:
            return (await api.get(f"/v1/submissions/{sid}", headers=admin)).json()["status"] == "needs_intervention"

        await _until(failed, "needs_intervention")
        listed = await api.get("/v1/admin/dlq", params={"kind": "submission"}, headers=admin)
        assert listed.status_code == 200, listed.text
        [item] = listed.json()["items"]
        assert (item["kind"], item["reference_id"], item["status"], item["event_type"]) == (
            "submission", sid, "open", "grading")
        assert "grader bug" in item["last_error"] and item["first_error"] == item["last_error"]
        assert item["attempts"] >= 1 and item["payload"]["attempts"] == item["attempts"]
        assert item["payload"]["workflow_id"] == f"grade-{sid}" and item["payload"]["run_id"]
        assert listed.json()["next_cursor"] is None

        # Tenant-scoped (RLS) and admin-only; problem+json errors.
        other = await api.get(f"/v1/admin/dlq/{item['id']}", headers=auth_headers(new_tenant()))
        assert other.status_code == 404 and other.headers["content-type"].startswith(PROBLEM)
        assert (await api.get("/v1/admin/dlq", headers=auth_headers(new_tenant()))).json()["items"] == []
        reviewer = await api.post(f"/v1/admin/dlq/{item['id']}/replay", json={"reason": "x"},
                                  headers=auth_headers(tenant_id, roles=("reviewer",)))
        assert reviewer.status_code == 403
        no_reason = await api.post(f"/v1/admin/dlq/{item['id']}/replay", json={}, headers=admin)
        assert no_reason.status_code == 422 and no_reason.headers["content-type"].startswith(PROBLEM)

        grader.broken = False
        replayed = await api.post(f"/v1/admin/dlq/{item['id']}/replay", json={"reason": "grader fixed"},
                                  headers=admin)
        assert replayed.status_code == 200, replayed.text
        body = replayed.json()
        assert (body["status"], body["resolved_by"], body["resolution_reason"]) == ("replayed", "ops-alice",
                                                                                   "grader fixed")
        assert [(a["action"], a["actor"], a["reason"]) for a in body["actions"]] == [
            ("replay", "ops-alice", "grader fixed")]
        again = await api.post(f"/v1/admin/dlq/{item['id']}/replay", json={"reason": "twice"}, headers=admin)
        assert again.status_code == 409 and again.json()["type"].endswith("dead-letter-conflict")

        async def graded() -> bool:
            return (await api.get(f"/v1/submissions/{sid}", headers=admin)).json()["status"] == "completed"

        await _until(graded, "completed after the replay")

    shown = (await api.get(f"/v1/admin/dlq/{item['id']}", headers=admin)).json()
    assert (shown["status"], shown["resolved_by"]) == ("resolved", "system")
    assert [(a["action"], a["actor"]) for a in shown["actions"]] == [("replay", "ops-alice"), ("resolve", "system")]
    failed_run = item["payload"]["run_id"]
    assert body["actions"][0]["detail"]["previous_run_id"] == failed_run
    assert shown["actions"][1]["detail"]["run_id"] not in ("", failed_run)  # the retry's run graded it
    assert (await api.get("/v1/admin/dlq", params={"status": "open"}, headers=admin)).json()["items"] == []
    view = (await api.get(f"/v1/submissions/{sid}", headers=admin)).json()
    assert len(view["results"]) == 4


async def test_dead_letter_pages_and_filters(api, auth_headers, tenant_id, pools):
    from infra.events.dead_letters import record_dead_letter

    async with pools.transaction(tenant_id) as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                           (tenant_id, tenant_id))
        for n in range(5):
            await record_dead_letter(conn, tenant_id=tenant_id, kind="external_event", reference_id=f"ev-{n}",
                                     error="not_running: workflow grade-x is completed", payload={"n": n},
                                     event_type="lms.comment")
    admin = auth_headers(tenant_id)
    seen, cursor = [], None
    while True:
        params = {"kind": "external_event", "page_size": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/admin/dlq", params=params, headers=admin)).json()
        assert len(page["items"]) <= 2
        seen += [i["reference_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"ev-{n}" for n in range(5)]
    assert (await api.get("/v1/admin/dlq", params={"kind": "outbox"}, headers=admin)).json()["items"] == []
    bad = await api.get("/v1/admin/dlq", params={"kind": "nope"}, headers=admin)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith(PROBLEM)

    first = (await api.get("/v1/admin/dlq", headers=admin)).json()["items"][0]
    discarded = await api.post(f"/v1/admin/dlq/{first['id']}/discard", json={"reason": "producer bug, fixed"},
                               headers=admin)
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    assert [(a["action"], a["reason"]) for a in discarded.json()["actions"]] == [("discard", "producer bug, fixed")]
    assert (await api.post(f"/v1/admin/dlq/{first['id']}/discard", json={"reason": "again"},
                           headers=admin)).status_code == 409
    assert (await api.post("/v1/admin/dlq/999999999999/discard", json={"reason": "x"},
                           headers=admin)).status_code == 404
