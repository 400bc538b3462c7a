# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""Property 25 (API, cache and channel part): no tenant can read or change another tenant's data
through the API, the Redis cache or the live channels."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.cache.keys import submission_key
from infra.events import live
from tests.integration.api_contract.fixtures import create_exam, new_tenant, submission_body

OPERATIONS = ["get_submission", "get_exam", "progress", "list_by_exam", "list_all", "list_exams", "put_rubric",
              "submit_to_exam", "ws_submission", "ws_exam"]


@pytest.fixture
async def tenant_a(api, bearer):
    a = new_tenant()
    exam = await create_exam(api, bearer(a), "secret exam")
    resp = await api.post("/v1/submissions", json=submission_body(exam, "alice"), headers=bearer(a))
    return a, exam, resp.json()["submission_id"]


async def _ws(url: str) -> dict | int:
    try:
        async with websockets.connect(url, open_timeout=10) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except InvalidStatus as exc:
        return exc.response.status_code
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


@given(op=st.sampled_from(OPERATIONS), warm_cache=st.booleans(),
       roles=st.sampled_from([("admin",), ("submitter",), ("reviewer",), ("submitter", "reviewer", "admin")]))
async def test_other_tenant_sees_and_changes_nothing(api, contract_url, bearer, pools, tenant_a, op, warm_cache,
                                                     roles) -> None:
    a, exam, sub = tenant_a
    b = new_tenant()
    hb = bearer(b, roles=roles)
    if warm_cache:  # A's hot copy in Redis must not help B
        assert (await api.get(f"/v1/submissions/{sub}", headers=bearer(a))).status_code == 200
    ws_base = contract_url.replace("http://", "ws://")
    token_b = hb["Authorization"].split()[1]
    if op == "get_submission":
        assert (await api.get(f"/v1/submissions/{sub}", headers=hb)).status_code == 404
    elif op == "get_exam":
        assert (await api.get(f"/v1/exams/{exam}", headers=hb)).status_code == 404
    elif op == "progress":
        assert (await api.get(f"/v1/submissions/{sub}/progress", headers=hb)).status_code == 404
    elif op in ("list_by_exam", "list_all"):
        params = {"exam_id": exam} if op == "list_by_exam" else {}
        assert (await api.get("/v1/submissions", params=params, headers=hb)).json()["items"] == []
    elif op == "list_exams":
        assert (await api.get("/v1/exams", headers=hb)).json()["items"] == []
    elif op == "put_rubric":
        resp = await api.put(f"/v1/exams/{exam}/questions/q1/rubric", headers=hb,
                             json={"options": ["a", "b", "c"], "correct": ["c"]})
        assert resp.status_code in (403, 404)  # 403 when the role may not write at all
    elif op == "submit_to_exam":
        resp = await api.post("/v1/submissions", json=submission_body(exam, "mallory"), headers=hb)
        assert resp.status_code in (403, 404)
    else:
        path = f"submissions/{sub}" if op == "ws_submission" else f"exams/{exam}"
        assert not isinstance(await _ws(f"{ws_base}/v1/ws/{path}?token={token_b}"), dict)
    assert not await pools.redis.exists(submission_key(b, sub))
    seen = (await api.get(f"/v1/exams/{exam}", headers=bearer(a))).json()
    assert seen["questions"][0]["rubric_version"] == 1 and seen["title"] == "secret exam"


async def test_channels_carry_only_their_tenant(api, contract_url, bearer, pools, tenant_a) -> None:
    a, _, sub_a = tenant_a
    b = new_tenant()
    exam_b = await create_exam(api, bearer(b))
    sub_b = (await api.post("/v1/submissions", json=submission_body(exam_b), headers=bearer(b))).json()[
        "submission_id"]
    token_b = bearer(b)["Authorization"].split()[1]
    url = f"{contract_url.replace('http://', 'ws://')}/v1/ws/submissions/{sub_b}?token={token_b}"
    async with websockets.connect(url, open_timeout=10) as ws:
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert snapshot["event_type"] == "snapshot" and snapshot["submission_id"] == sub_b
        await asyncio.sleep(0.3)  # the feed is subscribed once the snapshot is out
        # A's channel carries an event naming B's submission: B's feed must not see it.
        await live.publish_status(pools.redis, tenant_id=a, submission_id=sub_b, status="forged")
        await live.publish_status(pools.redis, tenant_id=a, submission_id=sub_a, status="grading")
        await live.publish_status(pools.redis, tenant_id=b, submission_id=sub_b, status="marker")
        got = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert got["payload"]["status"] == "marker"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
