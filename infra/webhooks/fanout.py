"""The relay's webhook consumer: every published event becomes a pending delivery per subscribed endpoint.

Registered on the relay under ``"*"`` (every event type). It runs in its own tenant transaction with
:func:`~infra.events.outbox.mark_consumed` (consumer ``webhooks``), so an event the relay sends again
(a crash before it marked the event published) records no second delivery. Sending is the
dispatcher's job (:mod:`infra.webhooks.dispatcher`), woken through ``wake``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from infra.db.pools import PoolManager
from infra.events.outbox import EventEnvelope, mark_consumed
from infra.stores import webhooks
from infra.webhooks.signing import webhook_body

CONSUMER = "webhooks"
"""The consumer name in ``consumed_events``."""


def webhook_fanout(pools: PoolManager, *, wake: Callable[[], None] | None = None
                   ) -> Callable[[EventEnvelope], Awaitable[None]]:
    """A relay handler recording the deliveries of each event once (then calling ``wake`` if it recorded any)."""

    async def handle(envelope: EventEnvelope) -> None:
        async with pools.transaction(envelope.tenant_id) as conn:
            if not await mark_consumed(conn, envelope.event_id, CONSUMER, envelope.tenant_id):
                return
            recorded = await webhooks.record_deliveries(conn, event_id=envelope.event_id,
                                                        event_type=envelope.event_type, body=webhook_body(envelope))
        if recorded and wake is not None:
            wake()

    return handle
