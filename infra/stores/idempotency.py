"""PostgreSQL storage of idempotency keys (table ``idempotency_cache``), Stripe semantics.

A key is scoped to ``(tenant, caller, method, path)``. :meth:`IdempotencyStore.claim` inserts an
``in_flight`` row in its own committed transaction *before* the handler runs, so concurrent
requests with one key race on the primary key, never in application code: exactly one wins, the
others see the winner's row. The winner then marks the row done with the
response, or releases it (5xx, crash) so the client may retry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from psycopg.errors import ForeignKeyViolation
from psycopg.types.json import Jsonb

CLAIM_SQL = """
INSERT INTO idempotency_cache (tenant_id, caller, method, path, key, fingerprint, state, expires_at)
VALUES (%(tenant)s, %(caller)s, %(method)s, %(path)s, %(key)s, %(fingerprint)s, 'in_flight',
        now() + make_interval(secs => %(ttl)s))
ON CONFLICT (tenant_id, caller, method, path, key) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, state = 'in_flight', response_status = NULL,
       response_headers = NULL, response_body = NULL, created_at = now(),
       expires_at = EXCLUDED.expires_at
 WHERE idempotency_cache.expires_at < now()
    OR (idempotency_cache.state = 'in_flight'
        AND idempotency_cache.fingerprint = EXCLUDED.fingerprint
        AND idempotency_cache.created_at < now() - make_interval(secs => %(lease)s))
RETURNING 1
"""
"""Claim a key: insert it, or take over an expired row or an abandoned in-flight one."""

ENSURE_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
"""A tenant's first request may be a keyed POST: its row must exist for the foreign key."""

SELECT_SQL = """
SELECT fingerprint, state, response_status, response_headers, response_body,
       GREATEST(1, CEIL(EXTRACT(EPOCH FROM (created_at + make_interval(secs => %(lease)s) - now()))))::int
           AS lease_left
  FROM idempotency_cache
 WHERE tenant_id = %(tenant)s AND caller = %(caller)s AND method = %(method)s AND path = %(path)s
   AND key = %(key)s
"""

COMPLETE_SQL = """
UPDATE idempotency_cache
   SET state = 'done', response_status = %(status)s, response_headers = %(headers)s,
       response_body = %(body)s
 WHERE tenant_id = %(tenant)s AND caller = %(caller)s AND method = %(method)s AND path = %(path)s
   AND key = %(key)s AND state = 'in_flight'
"""

RELEASE_SQL = """
DELETE FROM idempotency_cache
 WHERE tenant_id = %(tenant)s AND caller = %(caller)s AND method = %(method)s AND path = %(path)s
   AND key = %(key)s AND state = 'in_flight'
"""

MAX_CLAIM_ATTEMPTS = 3


def fingerprint(body: bytes, content_type: str | None = None) -> str:
    """SHA-256 of a request body; JSON bodies are canonicalised (key order, whitespace)."""
    data = body
    if body and (content_type or "").split(";")[0].strip().lower().endswith("json"):
        try:
            data = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except ValueError:
            data = body
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotencyScope:
    """Where a key lives: one key means one operation of one caller on one endpoint."""

    tenant_id: str
    caller: str
    method: str
    path: str
    key: str

    def params(self) -> dict[str, Any]:
        """SQL parameters naming the row."""
        return {"tenant": self.tenant_id, "caller": self.caller, "method": self.method,
                "path": self.path, "key": self.key}


class Outcome(StrEnum):
    """Result of a claim."""

    CLAIMED = "claimed"
    """This request owns the key: run the handler."""
    REPLAY = "replay"
    """A completed response is stored: send it back."""
    IN_FLIGHT = "in_flight"
    """Another request with this key is running: 409."""
    MISMATCH = "mismatch"
    """The key was used with a different body: 422."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response saved for replay."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`IdempotencyStore.claim` decided."""

    outcome: Outcome
    response: StoredResponse | None = None
    """The stored response, for ``REPLAY``."""
    retry_after: int = 1
    """Seconds a client should wait before retrying, for ``IN_FLIGHT``."""


class IdempotencyStore:
    """Idempotency keys of all tenants, each access under the tenant's RLS context.

    Args:
        pools: the process :class:`infra.db.pools.PoolManager`.
        ttl_hours: how long a key is remembered (``Settings.idempotency_ttl_hours``).
        lease_seconds: after this long an ``in_flight`` row is presumed abandoned (crashed
            process) and a retry with the same body may take it over.

    """

    def __init__(self, pools: Any, *, ttl_hours: float, lease_seconds: float = 60.0) -> None:
        self._pools = pools
        self._ttl = ttl_hours * 3600.0
        self._lease = lease_seconds

    async def claim(self, scope: IdempotencyScope, fingerprint: str) -> Claim:
        """Claim ``scope`` for a request whose body hashes to ``fingerprint``.

        Each attempt runs in its own transaction, committed before the handler runs.
        """
        params = {**scope.params(), "fingerprint": fingerprint, "ttl": self._ttl, "lease": self._lease}
        for _ in range(MAX_CLAIM_ATTEMPTS):
            try:
                async with self._pools.transaction(scope.tenant_id) as conn:
                    cur = await conn.execute(CLAIM_SQL, params)
                    if await cur.fetchone() is not None:
                        return Claim(Outcome.CLAIMED)
            except ForeignKeyViolation:
                async with self._pools.transaction(scope.tenant_id) as conn:
                    await conn.execute(ENSURE_TENANT_SQL, (scope.tenant_id,))
                continue
            async with self._pools.transaction(scope.tenant_id) as conn:
                cur = await conn.execute(SELECT_SQL, params)
                row = await cur.fetchone()
            if row is None:  # released between our insert and our read: claim again
                continue
            if row["fingerprint"] != fingerprint:
                return Claim(Outcome.MISMATCH)
            if row["state"] == "in_flight":
                return Claim(Outcome.IN_FLIGHT, retry_after=max(1, int(row["lease_left"] or 1)))
            headers = [(str(k), str(v)) for k, v in (row["response_headers"] or [])]
            stored = StoredResponse(int(row["response_status"]), headers, bytes(row["response_body"] or b""))
            return Claim(Outcome.REPLAY, response=stored)
        return Claim(Outcome.IN_FLIGHT, retry_after=1)

    async def complete(self, scope: IdempotencyScope, response: StoredResponse) -> None:
        """Store the response of a claimed key (state ``done``)."""
        params = {**scope.params(), "status": response.status,
                  "headers": Jsonb([list(h) for h in response.headers]), "body": response.body}
        async with self._pools.transaction(scope.tenant_id) as conn:
            await conn.execute(COMPLETE_SQL, params)

    async def release(self, scope: IdempotencyScope) -> None:
        """Forget a claimed key that produced no storable response (5xx or an error)."""
        async with self._pools.transaction(scope.tenant_id) as conn:
            await conn.execute(RELEASE_SQL, scope.params())
