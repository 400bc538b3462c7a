"""``gradeflow relay`` delivers webhooks, and a relay killed with SIGKILL loses none: its successor
delivers every event to a real verifying receiver, each under its event id as ``webhook-id``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

from tests.integration.infra.events.outbox_support import until
from tests.integration.infra.webhooks.receiver import Receiver, bound_socket, serving
from tests.integration.infra.webhooks.support import deliveries, emit, endpoint

ROOT = Path(__file__).resolve().parents[2]


async def _relay(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "infra.cli", "relay", cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def test_a_killed_relay_loses_no_webhook_delivery(services, pools) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    sock = bound_socket()
    _, secret = await endpoint(pools, tenant, f"http://127.0.0.1:{sock.getsockname()[1]}/hooks")
    env = {**services.env(), "GRADEFLOW_WEBHOOK_RETRY_SCHEDULE": json.dumps([0.2] * 500),
           "GRADEFLOW_WEBHOOK_TIMEOUT": "1", "GRADEFLOW_WEBHOOK_POLL_INTERVAL": "0.1",
           "GRADEFLOW_OUTBOX_POLL_INTERVAL": "0.2", "GRADEFLOW_RELAY_METRICS_PORT": "0"}
    events = await emit(pools, tenant, 8)
    first = await _relay(env)
    try:
        async def all_tried() -> bool:
            rows = await deliveries(pools, tenant)
            return len(rows) == len(events) and all(r["attempts"] >= 1 for r in rows)

        await until(all_tried, timeout=90, what="`gradeflow relay` to try every delivery (receiver down)")
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert all(r["status"] == "pending" for r in await deliveries(pools, tenant))

    receiver = Receiver([secret])
    async with serving(receiver, sock):
        second = await _relay(env)
        try:
            async def all_delivered() -> bool:
                return all(r["status"] == "delivered" for r in await deliveries(pools, tenant))

            await until(all_delivered, timeout=90, what="the next relay to deliver every event")
        finally:
            second.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 0, stderr.decode()[-2000:]
    ids = {e.event_id for e in events}
    assert {r.webhook_id for r in receiver.received} == ids
    for request in receiver.received:
        assert request.verified_by == [0] and request.event["data"]["event_id"] == request.webhook_id
