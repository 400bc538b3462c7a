"""Webhook endpoints and their deliveries (``migrations/0016_webhooks.sql``).

Endpoints are a tenant's (row-level security). :func:`record_deliveries` runs in the relay's webhook
fan-out transaction: one ``pending`` delivery per active endpoint subscribed to the event. The
dispatcher claims due deliveries across tenants with :func:`claim_due` (``webhook_claim``: ``FOR
UPDATE SKIP LOCKED`` and a lease) and records each attempt with :func:`record_success` or
:func:`record_failure` under the delivery's tenant; the last failure becomes a ``webhook`` dead letter,
and an endpoint whose deliveries have all failed for the disable window is disabled (with an outbox
event ``webhook.endpoint_disabled``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from infra.constants import EventType
from infra.db.pools import PoolManager
from infra.events.dead_letters import record_dead_letter
from infra.events.outbox import add_event
from infra.stores.exams import ensure_tenant

MAX_ENDPOINTS = 50
"""Most webhook endpoints one tenant may register."""
ENDPOINT_COLUMNS = """
id::text AS id, url, event_types, description, status, disabled_reason, disabled_at, failing_since,
previous_secret_expires_at, created_by, created_at, updated_at"""
COUNT_ENDPOINTS_SQL = "SELECT count(*) AS n FROM webhook_endpoints"
LOCK_TENANT_ENDPOINTS_SQL = "SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints:' || %s))"
INSERT_ENDPOINT_SQL = f"""
INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, description, secret, created_by)
VALUES (%(id)s, %(tenant)s, %(url)s, %(event_types)s, %(description)s, %(secret)s, %(created_by)s)
RETURNING {ENDPOINT_COLUMNS}"""
LIST_ENDPOINTS_SQL = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
GET_ENDPOINT_SQL = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = %(id)s"
DELETE_ENDPOINT_SQL = "DELETE FROM webhook_endpoints WHERE id = %(id)s RETURNING id"
ROTATE_SECRET_SQL = f"""
UPDATE webhook_endpoints
   SET previous_secret = CASE WHEN %(grace)s > 0 THEN secret END,
       previous_secret_expires_at = CASE WHEN %(grace)s > 0 THEN now() + make_interval(secs => %(grace)s) END,
       secret = %(secret)s, updated_at = now()
 WHERE id = %(id)s
RETURNING {ENDPOINT_COLUMNS}"""
ENABLE_SQL = f"""
UPDATE webhook_endpoints
   SET status = 'active', disabled_reason = NULL, disabled_at = NULL, failing_since = NULL, updated_at = now()
 WHERE id = %(id)s
RETURNING {ENDPOINT_COLUMNS}"""
LIST_DELIVERIES_SQL = """
SELECT id, event_id::text AS event_id, event_type, status, attempts, last_status_code, last_error,
       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, last_attempt_at, delivered_at,
       created_at
  FROM webhook_deliveries
 WHERE endpoint_id = %(endpoint)s AND (%(status)s::text IS NULL OR status = %(status)s)
   AND (%(before)s::bigint IS NULL OR id < %(before)s)
 ORDER BY id DESC LIMIT %(limit)s"""
RECORD_DELIVERIES_SQL = """
INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event_type, body)
SELECT tenant_id, id, %(event_id)s, %(event_type)s, %(body)s FROM webhook_endpoints
 WHERE status = 'active' AND (%(event_type)s = ANY(event_types) OR '*' = ANY(event_types))
ON CONFLICT (endpoint_id, event_id) DO NOTHING"""
CLAIM_SQL = "SELECT * FROM webhook_claim(%s, %s)"
SUCCESS_SQL = """
UPDATE webhook_deliveries
   SET status = 'delivered', attempts = attempts + 1, last_status_code = %(code)s, last_error = NULL,
       last_attempt_at = now(), delivered_at = now()
 WHERE id = %(id)s AND status = 'pending'"""
ENDPOINT_OK_SQL = """
UPDATE webhook_endpoints SET failing_since = NULL WHERE id = %(endpoint)s AND failing_since IS NOT NULL"""
FAILURE_SQL = """
UPDATE webhook_deliveries
   SET status = CASE WHEN %(give_up)s THEN 'failed' ELSE 'pending' END, attempts = attempts + 1,
       last_status_code = %(code)s, last_error = %(error)s, last_attempt_at = now(),
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 WHERE id = %(id)s AND status = 'pending'
RETURNING attempts"""
ENDPOINT_FAILING_SQL = """
UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now())
 WHERE id = %(endpoint)s
RETURNING status, failing_since, failing_since <= now() - make_interval(secs => %(window)s) AS overdue"""
DISABLE_SQL = """
UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = %(reason)s, disabled_at = now(), updated_at = now()
 WHERE id = %(endpoint)s AND status = 'active'
RETURNING url"""


class EndpointNotFoundError(LookupError):
    """No webhook endpoint with that id for this tenant."""


class TooManyEndpointsError(ValueError):
    """The tenant has :data:`MAX_ENDPOINTS` endpoints already."""


@dataclass(frozen=True)
class Claim:
    """A delivery the dispatcher claimed (leased), with what it needs to send it."""

    id: int
    tenant_id: str
    endpoint_id: str
    event_id: str
    """The ``webhook-id`` header: the same on every attempt and every re-send."""
    event_type: str
    body: str
    """The exact request body."""
    attempts: int
    """Attempts made before this one."""
    url: str
    secret: str
    previous_secret: str | None
    """The rotated-out secret, while its grace period lasts (signs too)."""
    previous_secret_expires_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Claim:
        """Build from a ``webhook_claim`` row."""
        return cls(id=int(row["id"]), tenant_id=row["tenant_id"], endpoint_id=str(row["endpoint_id"]),
                   event_id=str(row["event_id"]), event_type=row["event_type"], body=row["body"],
                   attempts=int(row["attempts"]), url=row["url"], secret=row["secret"],
                   previous_secret=row["previous_secret"],
                   previous_secret_expires_at=row["previous_secret_expires_at"])


@dataclass(frozen=True)
class FailureOutcome:
    """What one failed attempt led to."""

    dead_letter_id: int | None
    """The ``webhook`` dead letter, when that was the last attempt."""
    disabled: bool
    """Whether this failure disabled the endpoint."""


async def create_endpoint(pools: PoolManager, tenant_id: str, *, url: str, event_types: list[str],
                          description: str | None, secret: str, created_by: str) -> dict[str, Any]:
    """Register an endpoint; return it (without its secret)."""
    async with pools.transaction(tenant_id) as conn:
        await ensure_tenant(conn, tenant_id)
        await conn.execute(LOCK_TENANT_ENDPOINTS_SQL, (tenant_id,))  # the count holds
        count = await (await conn.execute(COUNT_ENDPOINTS_SQL)).fetchone()
        if count is not None and int(count["n"]) >= MAX_ENDPOINTS:
            raise TooManyEndpointsError(f"a tenant may register at most {MAX_ENDPOINTS} webhook endpoints")
        cur = await conn.execute(INSERT_ENDPOINT_SQL, {
            "id": str(uuid.uuid4()), "tenant": tenant_id, "url": url, "event_types": event_types,
            "description": description, "secret": secret, "created_by": created_by})
        row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def list_endpoints(pools: PoolManager, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's endpoints, oldest first (never their secrets)."""
    async with pools.transaction(tenant_id) as conn:
        return [dict(r) for r in await (await conn.execute(LIST_ENDPOINTS_SQL)).fetchall()]


async def _one(pools: PoolManager, tenant_id: str, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    async with pools.transaction(tenant_id) as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    if row is None:
        raise EndpointNotFoundError(params["id"])
    return dict(row)


async def get_endpoint(pools: PoolManager, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
    """One endpoint (no secret); :class:`EndpointNotFoundError` if the tenant has none with that id."""
    return await _one(pools, tenant_id, GET_ENDPOINT_SQL, {"id": endpoint_id})


async def delete_endpoint(pools: PoolManager, tenant_id: str, endpoint_id: str) -> None:
    """Delete an endpoint and its deliveries (pending ones are never sent)."""
    await _one(pools, tenant_id, DELETE_ENDPOINT_SQL, {"id": endpoint_id})


async def rotate_secret(pools: PoolManager, tenant_id: str, endpoint_id: str, *, secret: str,
                        grace_seconds: float) -> dict[str, Any]:
    """Give the endpoint a new secret; the old one keeps signing (beside it) for ``grace_seconds``."""
    return await _one(pools, tenant_id, ROTATE_SECRET_SQL, {"id": endpoint_id, "secret": secret,
                                                            "grace": float(grace_seconds)})


async def enable_endpoint(pools: PoolManager, tenant_id: str, endpoint_id: str) -> dict[str, Any]:
    """Re-activate a disabled endpoint: its pending deliveries go out again, its failure clock restarts."""
    return await _one(pools, tenant_id, ENABLE_SQL, {"id": endpoint_id})


async def list_deliveries(pools: PoolManager, tenant_id: str, endpoint_id: str, *, status: str | None,
                          limit: int, before_id: int | None) -> list[dict[str, Any]]:
    """An endpoint's deliveries, newest first; ``before_id`` pages (``None``: the newest)."""
    async with pools.transaction(tenant_id) as conn:
        if await (await conn.execute(GET_ENDPOINT_SQL, {"id": endpoint_id})).fetchone() is None:
            raise EndpointNotFoundError(endpoint_id)
        cur = await conn.execute(LIST_DELIVERIES_SQL, {"endpoint": endpoint_id, "status": status,
                                                       "before": before_id, "limit": limit})
        return [dict(r) for r in await cur.fetchall()]


async def record_deliveries(conn: psycopg.AsyncConnection[Any], *, event_id: str, event_type: str,
                            body: str) -> int:
    """In the fan-out's tenant transaction: a pending delivery per subscribed active endpoint; how many."""
    cur = await conn.execute(RECORD_DELIVERIES_SQL, {"event_id": event_id, "event_type": event_type, "body": body})
    return cur.rowcount


async def claim_due(pools: PoolManager, *, limit: int, lease_seconds: float) -> list[Claim]:
    """Claim (lease) up to ``limit`` due deliveries of active endpoints, every tenant's."""
    async with pools.connection() as conn, conn.transaction():
        rows = await (await conn.execute(CLAIM_SQL, (limit, lease_seconds))).fetchall()
    return [Claim.from_row(row) for row in rows]


async def record_success(pools: PoolManager, claim: Claim, *, status_code: int) -> None:
    """The endpoint answered 2xx: delivered; the endpoint is no longer failing."""
    async with pools.transaction(claim.tenant_id) as conn:
        await conn.execute(SUCCESS_SQL, {"id": claim.id, "code": status_code})
        await conn.execute(ENDPOINT_OK_SQL, {"endpoint": claim.endpoint_id})


async def record_failure(pools: PoolManager, claim: Claim, *, status_code: int | None, error: str,
                         retry_in: float | None, disable_after: float) -> FailureOutcome:
    """Record a failed attempt: retry in ``retry_in`` seconds, or (``None``) give up with a dead letter.

    The endpoint's failure clock starts at its first failure since its last success; once it is older
    than ``disable_after`` seconds the endpoint is disabled, with an outbox event saying so.
    """
    give_up = retry_in is None
    async with pools.transaction(claim.tenant_id) as conn:
        cur = await conn.execute(FAILURE_SQL, {"id": claim.id, "give_up": give_up, "code": status_code,
                                               "error": error, "delay": 0.0 if give_up else float(retry_in or 0)})
        updated = await cur.fetchone()
        dlq_id = None
        if updated is not None and give_up:
            dlq_id = await record_dead_letter(
                conn, tenant_id=claim.tenant_id, kind="webhook", reference_id=str(claim.id), error=error,
                attempts=int(updated["attempts"]), event_type=claim.event_type,
                payload={"delivery_id": claim.id, "endpoint_id": claim.endpoint_id, "event_id": claim.event_id,
                         "url": claim.url, "status_code": status_code})
        failing = await (await conn.execute(ENDPOINT_FAILING_SQL, {"endpoint": claim.endpoint_id,
                                                                   "window": float(disable_after)})).fetchone()
        disabled = False
        if failing is not None and failing["overdue"] and failing["status"] == "active":
            reason = (f"every delivery failed since {failing['failing_since'].isoformat()} "
                      f"(more than {disable_after:g}s); last error: {error}")[:1000]
            if await (await conn.execute(DISABLE_SQL, {"endpoint": claim.endpoint_id,
                                                       "reason": reason})).fetchone() is not None:
                disabled = True
                await add_event(conn, tenant_id=claim.tenant_id, event_type=EventType.WEBHOOK_ENDPOINT_DISABLED,
                                target_type="webhook_endpoint", target_id=claim.endpoint_id,
                                payload={"endpoint_id": claim.endpoint_id, "url": claim.url, "reason": reason})
    return FailureOutcome(dead_letter_id=dlq_id, disabled=disabled)
