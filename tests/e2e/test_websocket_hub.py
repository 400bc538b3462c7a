# ruff: noqa: F811 - pytest fixtures imported from other test modules
"""Live feeds share one Redis pub/sub connection per API process (issue 9).

Sixty open feeds take no more than a few connections of the API's Redis pool, so another tenant's
feed, reads and readiness are undisturbed; past ``GRADEFLOW_WS_MAX_FEEDS_PER_TENANT`` a feed is
refused with close code 4429; a tenant's traffic about other submissions is not decoded per watcher;
a feed rides out a Redis disconnect and gets what it missed from the Stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from infra.cache.keys import events_channel
from infra.events import live
from infra.events.relay import OutboxRelay
from tests.e2e.test_websocket import emit, recv, recv_nothing, ws_url
from tests.integration.api.server import running_server
from tests.integration.api.tcp_proxy import TcpProxy
from tests.integration.api_contract.fixtures import create_exam, new_tenant, submission_body

FEEDS = 60


async def _served(settings: Any, temporal_client: Any, task_queue: str) -> Any:
    from api.app import create_app

    return create_app(settings, temporal_client=temporal_client,
                      grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})


@pytest.fixture
async def hub_api(contract_settings, temporal_client, task_queue) -> AsyncIterator[tuple[Any, str, httpx.AsyncClient]]:
    settings = contract_settings.model_copy(update={"ws_max_feeds_per_tenant": FEEDS})
    app = await _served(settings, temporal_client, task_queue)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield app, url, http


async def _tenant_with_submission(http: httpx.AsyncClient, bearer: Any) -> tuple[str, dict[str, str], str, str]:
    tenant = new_tenant()
    headers = bearer(tenant)
    exam_id = await create_exam(http, headers)
    resp = await http.post("/v1/submissions", json=submission_body(exam_id), headers=headers)
    assert resp.status_code == 202, resp.text
    return tenant, headers, exam_id, resp.json()["submission_id"]


async def _open(stack: AsyncExitStack, url: str, headers: dict[str, str]) -> Any:
    ws = await stack.enter_async_context(connect(url, additional_headers=headers, open_timeout=30))
    assert (await recv(ws))["event_type"] == "snapshot"
    return ws


def _redis_in_use(app: Any) -> int:
    return len(app.state.pools.redis.connection_pool._in_use_connections)


async def test_sixty_feeds_take_one_connection_and_do_not_disturb_another_tenant(hub_api, bearer, pools,
                                                                                 temporal_client) -> None:
    app, url, http = hub_api
    a, headers_a, _, sub_a = await _tenant_with_submission(http, bearer)
    b, headers_b, _, sub_b = await _tenant_with_submission(http, bearer)
    feed_a = ws_url(url, f"/v1/ws/submissions/{sub_a}")
    async with AsyncExitStack() as stack:
        feeds = []
        for start in range(0, FEEDS, 10):
            feeds += await asyncio.gather(*(_open(stack, feed_a, headers_a) for _ in range(start, start + 10)))
        in_use = _redis_in_use(app)
        print(f"\nRedis connections in use with {FEEDS} open feeds: {in_use} "
              f"(pool max {app.state.pools.redis.connection_pool.max_connections})")
        assert in_use <= 3, in_use
        assert app.state.feed_hub.feeds_of(a) == FEEDS and app.state.feed_hub.channels == 1

        # one more feed of the same tenant: refused with a close code that says why
        async with connect(feed_a, additional_headers=headers_a) as extra:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(extra)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        assert f"limit {FEEDS}" in closed.value.rcvd.reason

        # another tenant: reads served from Redis (not degraded), its feed works, readiness is ok
        first = await http.get(f"/v1/submissions/{sub_b}", headers=headers_b)
        second = await http.get(f"/v1/submissions/{sub_b}", headers=headers_b)
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        ready = (await http.get("/v1/health/ready")).json()
        assert ready["status"] == "ok", ready
        async with connect(ws_url(url, f"/v1/ws/submissions/{sub_b}"), additional_headers=headers_b) as feed_b:
            assert (await recv(feed_b))["event_type"] == "snapshot"
            await live.publish_progress(pools.redis, tenant_id=b, submission_id=sub_b, progress={"percentage": 5})
            assert (await recv(feed_b))["payload"] == {"percentage": 5}

        # every one of the sixty gets its tenant's event
        await live.publish_progress(pools.redis, tenant_id=a, submission_id=sub_a, progress={"percentage": 50})
        got = await asyncio.gather(*(recv(ws) for ws in feeds))
        assert all(m["payload"] == {"percentage": 50} and m["submission_id"] == sub_a for m in got)

        # a closed feed frees its slot
        await feeds.pop().close()
        for _ in range(100):
            if app.state.feed_hub.feeds_of(a) < FEEDS:
                break
            await asyncio.sleep(0.05)
        await _open(stack, feed_a, headers_a)
    for _ in range(100):  # every feed gone: the hub unsubscribes
        if app.state.feed_hub.channels == 0 and app.state.feed_hub.feeds_of(a) == 0:
            break
        await asyncio.sleep(0.05)
    assert app.state.feed_hub.channels == 0 and app.state.feed_hub.feeds_of(a) == 0
    for sid in (sub_a, sub_b):
        await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


async def test_traffic_about_other_submissions_is_not_decoded_per_watcher(hub_api, bearer, pools,
                                                                          temporal_client) -> None:
    app, url, http = hub_api
    tenant, headers, exam_id, sid = await _tenant_with_submission(http, bearer)
    hub = app.state.feed_hub
    async with AsyncExitStack() as stack:
        feeds = await asyncio.gather(*(_open(stack, ws_url(url, f"/v1/ws/submissions/{sid}"), headers)
                                       for _ in range(20)))
        messages, decoded = hub.messages, hub.decoded
        for i in range(50):  # the tenant's other gradings
            await live.publish_progress(pools.redis, tenant_id=tenant, submission_id=f"other-{i}",
                                        progress={"percentage": i}, exam_id="other-exam")
        await live.publish_progress(pools.redis, tenant_id=tenant, submission_id=sid,
                                    progress={"percentage": 99}, exam_id=exam_id)
        got = await asyncio.gather(*(recv(ws) for ws in feeds))
        assert all(m["payload"] == {"percentage": 99} for m in got)
        assert hub.messages - messages == 51
        assert hub.decoded - decoded == 1  # one decode for the one message twenty feeds wanted
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")


async def test_feed_rides_out_a_redis_disconnect_and_gets_what_it_missed(contract_settings, temporal_client,
                                                                        task_queue, bearer, pools,
                                                                        redis_url) -> None:
    target = urlsplit(redis_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        settings = contract_settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}"})
        app = await _served(settings, temporal_client, task_queue)
        async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            tenant, headers, _, sid = await _tenant_with_submission(http, bearer)
            relay = OutboxRelay(pools)
            while await relay.run_once():  # submission.received, before the feed opens
                pass
            async with connect(ws_url(url, f"/v1/ws/submissions/{sid}"), additional_headers=headers) as ws:
                assert (await recv(ws))["event_type"] == "snapshot"
                await recv_nothing(ws, 0.3)  # nothing from before the feed opened
                await proxy.cut()
                await emit(pools, relay, tenant, sid, 3, "missed")  # straight to the real Redis
                await live.publish_progress(pools.redis, tenant_id=tenant, submission_id=sid,
                                            progress={"lost": True})  # ephemeral: gone for good
                await proxy.restore()
                replayed = [await recv(ws) for _ in range(3)]
                assert [m["payload"]["tag"] for m in replayed] == ["missed0", "missed1", "missed2"]
                for _ in range(100):  # the hub is subscribed again once it replayed
                    if await pools.redis.pubsub_numsub(events_channel(tenant)) == [(events_channel(tenant), 1)]:
                        break
                    await asyncio.sleep(0.05)
                await emit(pools, relay, tenant, sid, 1, "after")
                after = await recv(ws)
                assert after["payload"]["tag"] == "after0"
                await recv_nothing(ws, 0.5)  # no duplicates
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")
