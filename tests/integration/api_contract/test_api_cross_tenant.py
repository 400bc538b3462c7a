# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Cross-tenant: tenant B's token can neither read, list, change nor subscribe to tenant A's data."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.cache.keys import events_channel
from tests.integration.api_contract.fixtures import create_exam, new_tenant, submission_body


async def _ws_first_message(url: str, **kwargs) -> dict | int:
    """The first message of a feed, or the close code / HTTP status that refused it."""
    try:
        async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except InvalidStatus as exc:
        return exc.response.status_code
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


@pytest.fixture
async def two_tenants(api, bearer):
    a, b = new_tenant(), new_tenant()
    exam_a = await create_exam(api, bearer(a), "A's exam")
    resp = await api.post("/v1/submissions", json=submission_body(exam_a, "alice"), headers=bearer(a))
    assert resp.status_code == 202
    await create_exam(api, bearer(b), "B's exam")
    return a, b, exam_a, resp.json()["submission_id"]


async def test_b_cannot_read_list_or_change_a(api, bearer, two_tenants) -> None:
    a, b, exam_a, sub_a = two_tenants
    hb = bearer(b)
    assert (await api.get(f"/v1/submissions/{sub_a}", headers=bearer(a))).status_code == 200  # A warms the cache
    for path in (f"/v1/submissions/{sub_a}", f"/v1/exams/{exam_a}", f"/v1/submissions/{sub_a}/progress"):
        resp = await api.get(path, headers=hb)
        assert resp.status_code == 404, path  # no existence leak: same as a missing id
    listed = (await api.get("/v1/submissions", headers=hb)).json()
    assert listed["items"] == []
    assert (await api.get("/v1/submissions", params={"exam_id": exam_a}, headers=hb)).json()["items"] == []
    exams_b = (await api.get("/v1/exams", headers=hb)).json()["items"]
    assert [e["title"] for e in exams_b] == ["B's exam"]
    rubric = {"options": ["a", "b", "c"], "correct": ["a"]}
    changed = await api.put(f"/v1/exams/{exam_a}/questions/q1/rubric", json=rubric, headers=hb)
    assert changed.status_code == 404
    submit = await api.post("/v1/submissions", json=submission_body(exam_a, "mallory"), headers=hb)
    assert submit.status_code == 404
    exam = (await api.get(f"/v1/exams/{exam_a}", headers=bearer(a))).json()
    assert exam["questions"][0]["rubric_version"] == 1  # untouched


async def test_b_cannot_replay_a_response_with_the_same_key(api, bearer, two_tenants) -> None:
    a, b, exam_a, _ = two_tenants
    key = {"Idempotency-Key": "shared"}
    first = await api.post("/v1/submissions", json=submission_body(exam_a, "bob"), headers={**bearer(a), **key})
    again = await api.post("/v1/submissions", json=submission_body(exam_a, "bob"), headers={**bearer(b), **key})
    assert first.status_code == 202 and again.status_code == 404
    assert "idempotent-replayed" not in again.headers


async def test_b_cannot_subscribe_to_a(contract_url, api, bearer, two_tenants, pools) -> None:
    a, b, exam_a, sub_a = two_tenants
    ws = contract_url.replace("http://", "ws://")
    token_a = bearer(a)["Authorization"].split()[1]
    token_b = bearer(b)["Authorization"].split()[1]
    own = await _ws_first_message(f"{ws}/v1/ws/submissions/{sub_a}?token={token_a}")
    assert isinstance(own, dict) and own["event_type"] == "snapshot" and own["submission_id"] == sub_a
    own_header = await _ws_first_message(f"{ws}/v1/ws/submissions/{sub_a}",
                                         additional_headers={"Authorization": f"Bearer {token_a}"})
    assert isinstance(own_header, dict) and own_header["event_type"] == "snapshot"
    for url in (f"{ws}/v1/ws/submissions/{sub_a}?token={token_b}", f"{ws}/v1/ws/exams/{exam_a}?token={token_b}",
                f"{ws}/v1/ws/submissions/{sub_a}", f"{ws}/v1/ws/submissions/{sub_a}?token=forged"):
        refused = await _ws_first_message(url)
        assert not isinstance(refused, dict), url  # no snapshot, no events
    assert events_channel(a) != events_channel(b) and a in events_channel(a)


async def test_b_cannot_override_a(api, bearer, two_tenants, pools, temporal_client) -> None:
    from tests.integration.api.test_api_review import GRADED, MAX_POINTS, complete_submission

    a, b, _, sub_a = two_tenants
    await temporal_client.get_workflow_handle(f"grade-{sub_a}").terminate("graded by the test")
    await complete_submission(pools, a, sub_a, {q: (s, MAX_POINTS[q]) for q, s in GRADED.items()})
    before = (await api.get(f"/v1/submissions/{sub_a}", headers=bearer(a))).json()
    body = {"overrides": {"q4": {"score": 0, "feedback": "zero"}}, "reason": "mallory"}
    for headers in (bearer(b), {**bearer(b), "Idempotency-Key": "override-a"}):
        resp = await api.post(f"/v1/submissions/{sub_a}/review", json=body, headers=headers)
        assert resp.status_code == 404, resp.text  # same as a missing id: no existence leak
    after = (await api.get(f"/v1/submissions/{sub_a}", headers=bearer(a))).json()
    assert after == before and after["total"] == sum(GRADED.values())
