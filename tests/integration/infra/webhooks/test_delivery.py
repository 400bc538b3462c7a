"""Webhook deliveries to a real receiver on 127.0.0.1 that verifies every Standard Webhooks signature.

The relay's fan-out records the deliveries, the dispatcher sends them; PostgreSQL, Redis and the
receiver are real. A receiver that is down, slow or failing never loses an event, and the same event
always arrives with the same ``webhook-id``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from prometheus_client import REGISTRY

from infra.db.pools import PoolManager
from infra.events.dead_letters import list_dead_letters, replay_dead_letter
from infra.stores import webhooks
from infra.webhooks.fanout import webhook_fanout
from infra.webhooks.signing import new_secret
from tests.integration.infra.events.outbox_support import until
from tests.integration.infra.webhooks.receiver import Receiver, bound_socket, serving
from tests.integration.infra.webhooks.support import deliveries, dispatcher, emit, endpoint, outbox, running


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _by_id(receiver: Receiver) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for request in receiver.received:
        out[request.webhook_id].append(request)
    return out


async def test_receiver_down_then_up_gets_every_event_once_per_webhook_id_across_a_restart(services, pools) -> None:
    tenant = _tenant()
    sock = bound_socket()
    port = sock.getsockname()[1]
    endpoint_id, secret = await endpoint(pools, tenant, f"http://127.0.0.1:{port}/hooks")
    events = await emit(pools, tenant, 12)
    ids = {e.event_id for e in events}

    async def all_failed_twice() -> bool:
        rows = await deliveries(pools, tenant)
        return len(rows) == len(ids) and all(r["attempts"] >= 2 and r["status"] == "pending" for r in rows)

    async with running(pools, dispatcher(pools)):  # receiver down: connections refused
        await until(all_failed_twice, what="every delivery to fail twice")
    rows = await deliveries(pools, tenant)
    assert {r["event_id"] for r in rows} == ids
    assert all("ConnectError" in (r["last_error"] or "") and r["last_status_code"] is None for r in rows)

    # The relay sends an event again (as after a crash before it marked it published): no second delivery.
    await webhook_fanout(pools)(events[0])
    assert len(await deliveries(pools, tenant)) == len(ids)

    receiver = Receiver([secret, new_secret()])
    restarted = PoolManager(services.app_url, services.redis_url, min_size=1, max_size=4, acquire_timeout=5)
    await restarted.open()
    try:
        async with serving(receiver, sock), running(restarted, dispatcher(restarted)):
            async def all_delivered() -> bool:
                return all(r["status"] == "delivered" for r in await deliveries(pools, tenant))

            await until(all_delivered, what="every delivery to arrive once the receiver is up")
    finally:
        await restarted.close()
    got = _by_id(receiver)
    assert set(got) == ids
    for webhook_id, requests in got.items():
        assert all(r.verified_by == [0] for r in requests)  # signed with this endpoint's secret, not another
        assert {r.body for r in requests} == {requests[0].body}
        assert requests[0].event["data"]["event_id"] == webhook_id
    assert all(r["last_status_code"] == 200 and r["last_error"] is None for r in await deliveries(pools, tenant))
    assert (await webhooks.get_endpoint(pools, tenant, endpoint_id))["failing_since"] is None


async def test_a_request_that_times_out_is_sent_again_with_the_same_webhook_id(pools) -> None:
    tenant = _tenant()
    sock = bound_socket()
    _, secret = await endpoint(pools, tenant, f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    receiver = Receiver([secret], delay=1.0)  # answers after the dispatcher gave up waiting
    events = await emit(pools, tenant, 3)
    async with serving(receiver, sock), running(pools, dispatcher(pools, timeout=0.3, delay=0.1)):
        async def each_sent_twice() -> bool:
            got = _by_id(receiver)
            return len(got) == 3 and all(len(v) >= 2 for v in got.values())

        await until(each_sent_twice, what="every event to be sent twice")
        receiver.delay = 0.0

        async def all_delivered() -> bool:
            return all(r["status"] == "delivered" for r in await deliveries(pools, tenant))

        await until(all_delivered, what="every delivery to arrive")
    got = _by_id(receiver)
    assert set(got) == {e.event_id for e in events}
    for webhook_id, requests in got.items():
        assert len(requests) >= 2
        assert all(r.verified_by == [0] and r.event["data"]["event_id"] == webhook_id for r in requests)
        assert {r.body for r in requests} == {requests[0].body}


async def test_after_a_rotation_both_secrets_sign_during_the_grace_period_then_only_the_new_one(pools) -> None:
    tenant = _tenant()
    sock = bound_socket()
    endpoint_id, first = await endpoint(pools, tenant, f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    second, third = new_secret(), new_secret()
    stranger = new_secret()
    receiver = Receiver([first, second, third, stranger])
    async with serving(receiver, sock), running(pools, dispatcher(pools)):
        async def delivered(count: int):  # type: ignore[no-untyped-def]
            async def check() -> bool:
                rows = await deliveries(pools, tenant)
                return len(rows) == count and all(r["status"] == "delivered" for r in rows)
            return check

        [e1] = await emit(pools, tenant, 1)
        await until(await delivered(1), what="the first delivery")
        await webhooks.rotate_secret(pools, tenant, endpoint_id, secret=second, grace_seconds=3600)
        [e2] = await emit(pools, tenant, 1)
        await until(await delivered(2), what="the delivery in the grace period")
        await webhooks.rotate_secret(pools, tenant, endpoint_id, secret=third, grace_seconds=0)
        [e3] = await emit(pools, tenant, 1)
        await until(await delivered(3), what="the delivery after a rotation without grace")
    got = _by_id(receiver)
    assert [r.verified_by for r in got[e1.event_id]] == [[0]]
    assert [r.verified_by for r in got[e2.event_id]] == [[0, 1]]
    assert len(got[e2.event_id][0].signature.split(" ")) == 2
    assert [r.verified_by for r in got[e3.event_id]] == [[2]]


async def test_the_last_failed_attempt_is_a_dead_letter_that_a_replay_delivers(pools) -> None:
    tenant = _tenant()
    sock = bound_socket()
    endpoint_id, secret = await endpoint(pools, tenant, f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    receiver = Receiver([secret], status=500)
    before = REGISTRY.get_sample_value("gradeflow_webhook_deliveries_total", {"outcome": "dead_lettered"}) or 0.0
    async with serving(receiver, sock), running(pools, dispatcher(pools, retries=2)):
        [event] = await emit(pools, tenant, 1)

        async def failed() -> dict | None:
            rows = await deliveries(pools, tenant)
            return rows[0] if rows and rows[0]["status"] == "failed" else None

        row = await until(failed, what="the delivery to give up")
        assert (row["attempts"], row["last_status_code"]) == (3, 500)
        assert row["last_error"] == "HTTP 500: receiver says no"
        assert [r.webhook_id for r in receiver.received] == [event.event_id] * 3
        [item] = await list_dead_letters(pools, tenant_id=tenant, kind="webhook")
        assert (item.reference_id, item.event_type, item.attempts, item.status) == (
            str(row["id"]), "submission.graded", 3, "open")
        assert item.payload["event_id"] == event.event_id and item.payload["endpoint_id"] == endpoint_id
        after = REGISTRY.get_sample_value("gradeflow_webhook_deliveries_total", {"outcome": "dead_lettered"})
        # The counter is per process and the dispatcher claims every tenant's due deliveries: in a full
        # session it also gives up on deliveries other tests left to unreachable receivers. This
        # tenant's exactly-one dead letter is asserted above, from the database.
        assert after is not None and after >= before + 1

        receiver.status = 200
        replayed = await replay_dead_letter(pools, item.id, actor="ops", reason="receiver fixed", tenant_id=tenant)
        assert replayed.status == "replayed"

        async def delivered() -> bool:
            rows = await deliveries(pools, tenant)
            return rows[0]["status"] == "delivered"

        await until(delivered, what="the replayed delivery to arrive")
    assert [r.webhook_id for r in receiver.received] == [event.event_id] * 4
    assert receiver.received[-1].verified_by == [0]


async def test_an_endpoint_failing_for_the_disable_window_is_disabled_and_says_so(pools) -> None:
    tenant = _tenant()
    sock = bound_socket()
    endpoint_id, secret = await endpoint(pools, tenant, f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    receiver = Receiver([secret], status=503)
    before = REGISTRY.get_sample_value("gradeflow_webhook_endpoints_disabled_total") or 0.0
    async with serving(receiver, sock), running(pools, dispatcher(pools, disable_after=0.5)):
        [first] = await emit(pools, tenant, 1)

        async def disabled() -> dict | None:
            row = await webhooks.get_endpoint(pools, tenant, endpoint_id)
            return row if row["status"] == "disabled" else None

        row = await until(disabled, what="the endpoint to be disabled")
        assert row["disabled_at"] is not None and "every delivery failed since" in row["disabled_reason"]
        assert "HTTP 503" in row["disabled_reason"]
        assert REGISTRY.get_sample_value("gradeflow_webhook_endpoints_disabled_total") == before + 1

        async def announced() -> list:
            return [r for r in await outbox(pools, tenant) if r["event_type"] == "webhook.endpoint_disabled"]

        [event] = await until(announced, what="the endpoint_disabled event")
        assert event["target_id"] == endpoint_id and event["payload"]["reason"] == row["disabled_reason"]

        # While disabled: its pending delivery waits, and new events are not recorded for it.
        [later] = await emit(pools, tenant, 1)

        async def published() -> bool:
            rows = await outbox(pools, tenant)
            return any(r["event_id"] == later.event_id and r["status"] == "published" for r in rows)

        await until(published, what="the later event to pass the fan-out")
        rows = await deliveries(pools, tenant)
        assert [r["event_id"] for r in rows] == [first.event_id] and rows[0]["status"] == "pending"

        receiver.status = 200
        await webhooks.enable_endpoint(pools, tenant, endpoint_id)

        async def delivered() -> bool:
            return (await deliveries(pools, tenant))[0]["status"] == "delivered"

        await until(delivered, what="the pending delivery after enabling")
    assert {r.webhook_id for r in receiver.received} == {first.event_id}
    assert (await webhooks.get_endpoint(pools, tenant, endpoint_id))["failing_since"] is None
