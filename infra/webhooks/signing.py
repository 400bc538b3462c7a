"""Standard Webhooks signing: secrets, the request body of an event, and the three signature headers.

A secret is ``whsec_`` + base64 of 32 random bytes. Every request carries ``webhook-id`` (the event
id: the same on every attempt, so a receiver drops a duplicate by it), ``webhook-timestamp`` (unix
seconds of this attempt) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``;
during a rotation's grace period a second ``v1,...`` signed with the previous secret, space-separated,
which receivers holding either secret accept).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

from infra.events.outbox import EventEnvelope

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret (``whsec_`` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def webhook_body(envelope: EventEnvelope) -> str:
    """The JSON body sent for an event: ``{"type", "timestamp", "data"}`` (Standard Webhooks' shape)."""
    data = {"event_id": envelope.event_id, "target_type": envelope.target_type, "target_id": envelope.target_id,
            "version": envelope.version, "actor_id": envelope.actor_id, "trace_id": envelope.trace_id,
            "correlation_id": envelope.correlation_id, "causation_id": envelope.causation_id,
            "payload": envelope.payload}
    return json.dumps({"type": envelope.event_type, "timestamp": envelope.occurred_at.isoformat(), "data": data},
                      separators=(",", ":"), sort_keys=True, default=str)


def signature_headers(message_id: str, body: str, signing_secrets: Sequence[str], *,
                      at: datetime | None = None) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers of one request.

    Args:
        message_id: the event id.
        body: the exact body sent.
        signing_secrets: the current secret first, then a previous one still in its grace period.
        at: the attempt's time (default: now).

    """
    when = (at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    signatures = " ".join(Webhook(secret).sign(message_id, when, body) for secret in signing_secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signatures}
