"""Live feed end to end: a real uvicorn server, a real ``websockets`` client, the real outbox relay.

Snapshot first, then events in order; a reconnect with ``last_event_id`` replays what was missed
from the Redis Stream with no duplicates; with a real grading worker the feed follows a submission
to ``completed``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from infra.events import live
from infra.events.outbox import add_event
from infra.events.relay import OutboxRelay
from tests.integration.api.conftest import (  # noqa: F401 - fixtures
    GOOD_ANSWERS,
    api_url,
    auth_headers,
    client,
    exam_body,
)
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixtures

RECV_TIMEOUT = 10.0


def ws_url(api_url: str, path: str) -> str:
    return api_url.replace("http://", "ws://") + path


async def recv(ws) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))


async def recv_nothing(ws, seconds: float = 1.0) -> None:
    with pytest.raises(TimeoutError):
        extra = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected message {extra}")


async def submit(client, headers) -> tuple[str, str]:
    exam = (await client.post("/v1/exams", json=exam_body(), headers=headers)).json()
    resp = await client.post("/v1/submissions", json={"exam_id": exam["id"], "student_id": "s1",
                                                      "answers": GOOD_ANSWERS}, headers=headers)
    assert resp.status_code == 202, resp.text
    return exam["id"], resp.json()["submission_id"]


async def emit(pools, relay: OutboxRelay, tenant_id: str, submission_id: str, n: int, tag: str) -> None:
    async with pools.transaction(tenant_id) as conn:
        for i in range(n):
            await add_event(conn, tenant_id=tenant_id, event_type="submission.status_changed",
                            target_type="submission", target_id=submission_id,
                            payload={"submission_id": submission_id, "tag": f"{tag}{i}"})
    while await relay.run_once():
        pass


async def test_snapshot_then_ordered_events_and_replay_without_duplicates(
        api_url, client, auth_headers, tenant_id, pools, temporal_client):
    headers = auth_headers(tenant_id)
    _, sid = await submit(client, headers)
    _, other_sid = await submit(client, headers)
    relay = OutboxRelay(pools)
    url = ws_url(api_url, f"/v1/ws/submissions/{sid}")

    async with connect(url, additional_headers=headers) as ws:
        snap = await recv(ws)
        assert snap["event_type"] == "snapshot" and snap["submission_id"] == sid
        assert snap["payload"]["status"] == "queued" and snap["stream_id"] is None
        while await relay.run_once():  # publishes both submission.received events
            pass
        received = await recv(ws)
        assert received["event_type"] == "submission.received" and received["submission_id"] == sid
        assert received["payload"]["trace_id"] and received["stream_id"]
        await live.publish_progress(pools.redis, tenant_id=tenant_id, submission_id=sid,
                                    progress={"stage": "grading", "percentage": 50})
        progress = await recv(ws)
        assert progress["event_type"] == "grading.progress" and progress["stream_id"] is None
        assert progress["payload"]["percentage"] == 50
        await emit(pools, relay, tenant_id, other_sid, 1, "other")
        await emit(pools, relay, tenant_id, sid, 2, "live")
        first_two = [await recv(ws), await recv(ws)]
        assert [m["payload"]["tag"] for m in first_two] == ["live0", "live1"]
        assert set(first_two[0]) == {"event_id", "stream_id", "event_type", "submission_id", "occurred_at",
                                     "payload"}
        last_seen = first_two[1]["stream_id"]
        await recv_nothing(ws, 0.5)

    await emit(pools, relay, tenant_id, sid, 3, "missed")  # published while nobody listens
    await emit(pools, relay, tenant_id, other_sid, 1, "other")

    async with connect(f"{url}?last_event_id={last_seen}", additional_headers=headers) as ws:
        assert (await recv(ws))["event_type"] == "snapshot"
        replayed = [await recv(ws) for _ in range(3)]
        assert [m["payload"]["tag"] for m in replayed] == ["missed0", "missed1", "missed2"]
        ids = [m["stream_id"] for m in replayed]
        assert ids == sorted(ids, key=lambda s: tuple(map(int, s.split("-"))))
        # a late duplicate on pub/sub of an event already replayed is dropped
        duplicate = {"event_id": replayed[2]["event_id"], "event_type": "submission.status_changed",
                     "target_type": "submission", "target_id": sid, "stream_id": replayed[2]["stream_id"],
                     "payload": replayed[2]["payload"], "occurred_at": replayed[2]["occurred_at"]}
        from infra.cache.keys import events_channel

        await pools.redis.publish(events_channel(tenant_id), json.dumps(duplicate))
        await emit(pools, relay, tenant_id, sid, 1, "after")
        after = await recv(ws)
        assert after["payload"]["tag"] == "after0"
        await recv_nothing(ws, 0.5)
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")
    await temporal_client.get_workflow_handle(f"grade-{other_sid}").terminate("test done")


async def close_of(url: str, headers: dict[str, str]) -> tuple[int, str]:
    """The close code and reason a feed ends with before sending anything."""
    async with connect(url, additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_refusals_are_close_codes_that_tell_auth_from_not_found(api_url, client, auth_headers, tenant_id,
                                                                     temporal_client):
    exam_id, sid = await submit(client, auth_headers(tenant_id))
    foreign = auth_headers(f"t-{uuid.uuid4().hex[:12]}")
    own = auth_headers(tenant_id)
    for path in (f"/v1/ws/submissions/{sid}", f"/v1/ws/exams/{exam_id}"):
        assert await close_of(ws_url(api_url, path), {}) == (4401, "missing or invalid bearer token")
        assert (await close_of(ws_url(api_url, path), {"Authorization": "Bearer forged"}))[0] == 4401
        token = foreign["Authorization"].split()[1]
        assert await close_of(ws_url(api_url, f"{path}?token={token}"), {}) == (4404, "not found")
    missing = (f"/v1/ws/submissions/{uuid.uuid4()}", f"/v1/ws/exams/{uuid.uuid4()}")
    for path in missing:  # a missing id and another tenant's id look exactly alike
        assert await close_of(ws_url(api_url, path), own) == (4404, "not found")
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


async def test_exam_feed_carries_progress_of_its_submissions_only(api_url, client, auth_headers, tenant_id, pools,
                                                                  temporal_client):
    headers = auth_headers(tenant_id)
    exam_id, sid = await submit(client, headers)
    other_exam, other_sid = await submit(client, headers)
    async with connect(ws_url(api_url, f"/v1/ws/exams/{exam_id}"), additional_headers=headers) as ws:
        assert (await recv(ws))["event_type"] == "snapshot"
        await live.publish_progress(pools.redis, tenant_id=tenant_id, submission_id=other_sid,
                                    progress={"percentage": 10}, exam_id=other_exam)
        await live.publish_progress(pools.redis, tenant_id=tenant_id, submission_id=sid,
                                    progress={"percentage": 60}, exam_id=exam_id)
        progress = await recv(ws)
        assert progress["event_type"] == "grading.progress" and progress["submission_id"] == sid
        assert progress["payload"]["percentage"] == 60
        await recv_nothing(ws, 0.5)
    for s in (sid, other_sid):
        await temporal_client.get_workflow_handle(f"grade-{s}").terminate("test done")


async def test_exam_feed_snapshot_counts_submissions(api_url, client, auth_headers, tenant_id, temporal_client):
    headers = auth_headers(tenant_id)
    exam_id, sid = await submit(client, headers)
    async with connect(ws_url(api_url, f"/v1/ws/exams/{exam_id}"), additional_headers=headers) as ws:
        snap = await recv(ws)
        assert snap["event_type"] == "snapshot"
        assert snap["payload"]["exam"]["id"] == exam_id
        assert snap["payload"]["submissions_by_status"] == {"queued": 1}
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


async def test_full_flow_is_graded_and_followed_live(api_url, client, auth_headers, tenant_id, pools,
                                                     temporal_client, saver, task_queue, app_settings):
    headers = auth_headers(tenant_id)
    relay = OutboxRelay(pools, poll_interval=0.2)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    try:
        async with grading_workers(temporal_client, pools, saver, app_settings, task_queue):
            exam = (await client.post("/v1/exams", json=exam_body(), headers=headers)).json()
            sid_holder: dict[str, str] = {}
            resp = await client.post("/v1/submissions", json={"exam_id": exam["id"], "student_id": "s1",
                                                              "answers": GOOD_ANSWERS}, headers=headers)
            assert resp.status_code == 202, resp.text
            sid_holder["sid"] = sid = resp.json()["submission_id"]
            seen: list[dict[str, Any]] = []
            async with connect(ws_url(api_url, f"/v1/ws/submissions/{sid}?last_event_id=0-0"),
                               additional_headers=headers) as ws:
                assert (await recv(ws))["event_type"] == "snapshot"
                while not any(m["event_type"] == "submission.graded" for m in seen):
                    seen.append(await recv(ws))
            durable = [m for m in seen if m["stream_id"]]
            assert len({m["event_id"] for m in durable}) == len(durable)  # no duplicates
            assert durable[0]["event_type"] == "submission.received"
            result = await temporal_client.get_workflow_handle(f"grade-{sid}").result()
            assert result is not None
    finally:
        stop.set()
        await asyncio.wait_for(relay_task, 15)
    view = await client.get(f"/v1/submissions/{sid}", headers=headers)
    assert view.status_code == 200
    body = view.json()
    assert body["status"] in ("completed", "needs_review")
    assert {r["question_id"] for r in body["results"]} == {"q1", "q2", "q3", "q4"}
    assert body["total"] == sum(r["score"] for r in body["results"])
    assert all(r["rubric_version"] == 1 for r in body["results"])
    progress = (await client.get(f"/v1/submissions/{sid}/progress", headers=headers)).json()
    assert progress["status"] == body["status"]
