"""Idempotency keys for POST/PUT/PATCH as a pure ASGI middleware (Stripe semantics).

A request carrying ``Idempotency-Key`` (or ``X-Idempotency-Key``) from an authenticated caller
is claimed in PostgreSQL before the handler runs (see :mod:`infra.stores.idempotency`):

* first use: the handler runs; a response below 500 is stored, then sent;
* replay (same key, same body): the stored response, with ``Idempotent-Replayed: true``;
* same key, different body: 422; still running: 409 with ``Retry-After``;
* 5xx or an exception: the key is released so the client may retry.

The claim reaches PostgreSQL before FastAPI's exception handlers are in play, so a database that
cannot answer it (restart, outage, pool exhausted) is answered here: 503 with ``Retry-After``, the
same problem the routes give (:func:`api.errors.outage_of`), and nothing is stored under the key.

Requests without a key, or without a valid token (the route answers 401), pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.auth import principal_from_scope
from api.errors import outage_of
from api.middleware.problem import problem_response
from infra.security.tokens import Principal
from infra.stores.idempotency import (
    Claim,
    IdempotencyScope,
    IdempotencyStore,
    Outcome,
    StoredResponse,
    fingerprint,
)

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEY_HEADERS = (b"idempotency-key", b"x-idempotency-key")
MAX_KEY_LENGTH = 255
UNSTORED_HEADERS = frozenset({"date", "server", "set-cookie", "idempotent-replayed"})
REPLAYED_HEADER = (b"idempotent-replayed", b"true")


class IdempotencyMiddleware:
    """Wrap an ASGI app with idempotency-key handling.

    Args:
        app: the wrapped ASGI app.
        ttl_hours: key lifetime (``Settings.idempotency_ttl_hours``).
        lease_seconds: age after which an in-flight key is presumed abandoned.
        methods: methods the keys apply to.

    """

    def __init__(self, app: Callable[..., Awaitable[None]], *, ttl_hours: float = 24.0,
                 lease_seconds: float = 60.0, methods: tuple[str, ...] = ("POST", "PUT", "PATCH")) -> None:
        self.app = app
        self.ttl_hours = ttl_hours
        self.lease_seconds = lease_seconds
        self.methods = frozenset(methods)

    def _store(self, scope: Scope) -> IdempotencyStore | None:
        app_state = getattr(scope.get("app"), "state", None)
        pools = scope.get("state", {}).get("pools") or getattr(app_state, "pools", None)
        if pools is None:
            return None
        return IdempotencyStore(pools, ttl_hours=self.ttl_hours, lease_seconds=self.lease_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or scope["method"] not in self.methods:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        raw_key = next((headers[h] for h in KEY_HEADERS if h in headers), None)
        principal = principal_from_scope(scope) if raw_key is not None else None
        if raw_key is None or not isinstance(principal, Principal):
            return await self.app(scope, receive, send)
        key = raw_key.decode("latin-1").strip()
        path = scope["path"]
        if not key or len(key) > MAX_KEY_LENGTH:
            resp = problem_response(
                422, f"The idempotency key must be 1 to {MAX_KEY_LENGTH} characters.",
                slug="invalid-idempotency-key", instance=path,
                errors=[{"field": "Idempotency-Key", "message": f"length must be 1..{MAX_KEY_LENGTH}"}])
            return await resp(scope, receive, send)
        store = self._store(scope)
        if store is None:
            resp = problem_response(503, "The idempotency store is not ready; retry shortly.",
                                    slug="dependency-unavailable", instance=path, headers={"Retry-After": "1"})
            return await resp(scope, receive, send)

        body = await _read_body(receive)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        ident = IdempotencyScope(principal.tenant_id, principal.sub, scope["method"], path, key)
        try:
            claim = await store.claim(ident, fingerprint(body, content_type))
        except Exception as exc:
            if not await _answer_outage(exc, path, scope, receive, send):
                raise
            return None
        if claim.outcome is not Outcome.CLAIMED:
            return await _answer_without_running(claim, path, scope, receive, send)
        await self._run_claimed(store, ident, body, scope, receive, send)

    async def _run_claimed(self, store: IdempotencyStore, ident: IdempotencyScope, body: bytes,
                           scope: Scope, receive: Receive, send: Send) -> None:
        replayed_body = False

        async def receive_once() -> Message:
            nonlocal replayed_body
            if not replayed_body:
                replayed_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            await self._finish(store, ident, start, b"".join(chunks))
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": False})

        try:
            await self.app(scope, receive_once, capture)
        except Exception as exc:
            await _release_quietly(store, ident)
            if start is not None or not await _answer_outage(exc, ident.path, scope, receive, send):
                raise
            return
        except BaseException:
            await _release_quietly(store, ident)
            raise
        if start is None:  # the app sent nothing at all
            await _release_quietly(store, ident)

    async def _finish(self, store: IdempotencyStore, ident: IdempotencyScope, start: Message,
                      body: bytes) -> None:
        status = int(start["status"])
        if status >= 500:
            await _release_quietly(store, ident)
            return
        kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])
                if k.decode("latin-1").lower() not in UNSTORED_HEADERS]
        try:
            await store.complete(ident, StoredResponse(status, kept, body))
        except Exception:  # the response itself succeeded; a retry will find the key in flight
            logger.exception("could not store the response of idempotency key %s", ident.key)
            await _release_quietly(store, ident)


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _answer_outage(exc: Exception, path: str, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer 503 if ``exc`` is a dependency outage (see :func:`api.errors.outage_of`); say whether it was."""
    outage = outage_of(exc)
    if outage is None:
        return False
    logger.warning("%s on %s %s (idempotency key): %s: %s", outage.slug, scope["method"], path,
                   type(exc).__name__, exc)
    resp = problem_response(503, outage.detail, slug=outage.slug, instance=path, headers=outage.headers)
    await resp(scope, receive, send)
    return True


async def _release_quietly(store: IdempotencyStore, ident: IdempotencyScope) -> None:
    try:
        await store.release(ident)
    except Exception:  # the lease expires the row eventually
        logger.exception("could not release idempotency key %s", ident.key)


async def _answer_without_running(claim: Claim, path: str, scope: Scope, receive: Receive,
                                  send: Send) -> None:
    if claim.outcome is Outcome.REPLAY:
        assert claim.response is not None
        stored = claim.response
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
        await send({"type": "http.response.start", "status": stored.status,
                    "headers": [*headers, REPLAYED_HEADER]})
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})
        return
    if claim.outcome is Outcome.MISMATCH:
        resp = problem_response(
            422, "This idempotency key was already used with a different request body.",
            slug="idempotency-key-reused", instance=path,
            errors=[{"field": "body", "message": "differs from the first request with this key"}])
    else:
        resp = problem_response(
            409, "A request with this idempotency key is still being processed.",
            slug="idempotency-in-flight", instance=path, headers={"Retry-After": str(claim.retry_after)})
    await resp(scope, receive, send)
