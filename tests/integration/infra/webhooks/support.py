"""Helpers of the webhook tests: endpoints and events of a tenant, its deliveries, a running relay + dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from infra.db.pools import PoolManager
from infra.events.outbox import EventEnvelope, add_event
from infra.events.relay import EVERY_EVENT, OutboxRelay
from infra.stores import webhooks
from infra.webhooks.dispatcher import WebhookDispatcher
from infra.webhooks.fanout import webhook_fanout
from infra.webhooks.signing import new_secret

INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
DELIVERIES_SQL = """
SELECT id, endpoint_id::text AS endpoint_id, event_id::text AS event_id, status, attempts, last_status_code,
       last_error FROM webhook_deliveries ORDER BY id"""
OUTBOX_SQL = "SELECT event_id::text AS event_id, event_type, target_id, status, payload FROM event_outbox ORDER BY id"


async def endpoint(pools: PoolManager, tenant: str, url: str, *, event_types: Sequence[str] = ("*",)
                   ) -> tuple[str, str]:
    """Register an endpoint (as the API does); return its id and secret."""
    secret = new_secret()
    row = await webhooks.create_endpoint(pools, tenant, url=url, event_types=list(event_types), description=None,
                                         secret=secret, created_by="test")
    return row["id"], secret


async def emit(pools: PoolManager, tenant: str, count: int, *, event_type: str = "submission.graded"
               ) -> list[EventEnvelope]:
    """Commit ``count`` events of one submission aggregate."""
    out = []
    async with pools.transaction(tenant) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant,))
        for seq in range(count):
            out.append(await add_event(conn, tenant_id=tenant, event_type=event_type, target_type="submission",
                                       target_id=f"sub-{seq}", payload={"seq": seq, "status": "completed"}))
    return out


async def deliveries(pools: PoolManager, tenant: str) -> list[dict[str, Any]]:
    """The tenant's delivery rows, oldest first."""
    async with pools.transaction(tenant) as conn:
        return [dict(r) for r in await (await conn.execute(DELIVERIES_SQL)).fetchall()]


async def outbox(pools: PoolManager, tenant: str) -> list[dict[str, Any]]:
    """The tenant's outbox rows, oldest first."""
    async with pools.transaction(tenant) as conn:
        return [dict(r) for r in await (await conn.execute(OUTBOX_SQL)).fetchall()]


def dispatcher(pools: PoolManager, *, retries: int = 1000, delay: float = 0.05, **options: Any) -> WebhookDispatcher:
    """A dispatcher retrying every ``delay`` seconds, ``retries`` times (test env: local receivers allowed)."""
    settings: dict[str, Any] = {"env": "test", "schedule": [delay] * retries, "jitter": 0.1, "timeout": 2.0,
                                "poll_interval": 0.05, "lease_seconds": 5.0}
    settings.update(options)
    return WebhookDispatcher(pools, **settings)


@contextlib.asynccontextmanager
async def running(pools: PoolManager, hooks: WebhookDispatcher) -> AsyncIterator[OutboxRelay]:
    """Run an outbox relay whose webhook fan-out wakes ``hooks``, and ``hooks`` itself, until the block ends."""
    relay = OutboxRelay(pools, batch_size=50, poll_interval=0.05, name="webhook-test",
                        handlers={EVERY_EVENT: webhook_fanout(pools, wake=hooks.wake)},
                        backoff_base=0.01, backoff_cap=0.05)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(hooks.run(stop))]
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.gather(*tasks)
