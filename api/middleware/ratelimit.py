"""Rate limits as a pure ASGI middleware: per tenant and route class, 429 problems when over.

Route classes: ``websocket`` (WebSocket connects), ``submit`` (POST/PUT/PATCH/DELETE) and ``read``
(everything else). The tenant comes from the bearer token; unauthenticated requests are counted
per client address: the peer's, or the one a trusted proxy forwarded (uvicorn believes
``X-Forwarded-For`` only from ``GRADEFLOW_TRUSTED_PROXIES``, see :func:`api.app.uvicorn_config`).
Health, metrics and documentation paths are never limited. When the limit cannot be checked (no free
Redis connection) the request is refused with 503 and ``Retry-After``, never let through. The limiter
lives on ``app.state.rate_limiter`` (built in the lifespan); without it requests pass unlimited.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.auth import principal_from_scope
from api.middleware.problem import problem_body, problem_response
from infra.security.ratelimit import Decision, RateLimiter
from infra.security.tokens import Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

EXEMPT_PREFIXES = ("/health", "/v1/health", "/healthz", "/readyz", "/metrics", "/docs", "/redoc",
                   "/openapi.json", "/ui/static")
"""Never limited: probes, scrapes, the API's documentation and the dashboard's static files (like /docs/assets)."""
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def route_class(scope: Scope) -> str:
    """The limit class of a request."""
    if scope["type"] == "websocket":
        return "websocket"
    return "submit" if scope["method"] in WRITE_METHODS else "read"


def _identity(scope: Scope) -> str:
    principal = principal_from_scope(scope)
    if isinstance(principal, Principal):
        return principal.tenant_id
    client = scope.get("client") or ("unknown", 0)
    return f"anon:{client[0]}"


class RateLimitMiddleware:
    """Wrap an ASGI app with per-tenant rate limits.

    Args:
        app: the wrapped ASGI app.
        exempt_prefixes: path prefixes that are never limited.

    """

    def __init__(self, app: Callable[..., Awaitable[None]], *,
                 exempt_prefixes: tuple[str, ...] = EXEMPT_PREFIXES) -> None:
        self.app = app
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(self.exempt_prefixes):
            return await self.app(scope, receive, send)
        app_state = getattr(scope.get("app"), "state", None)
        limiter: RateLimiter | None = scope.get("state", {}).get("rate_limiter") or getattr(
            app_state, "rate_limiter", None)
        if limiter is None:
            return await self.app(scope, receive, send)
        decision = await limiter.hit(_identity(scope), route_class(scope))
        if not decision.allowed:
            return await _refuse(decision, scope, receive, send)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        extra = [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _refuse(decision: Decision, scope: Scope, receive: Receive, send: Send) -> None:
    if decision.unavailable:
        status, slug = 503, "rate-limiter-busy"
        detail = "the rate limit could not be checked (every Redis connection is busy); retry shortly"
    else:
        status, slug = 429, "rate-limited"
        detail = f"rate limit of {decision.limit} per {decision.period}s exceeded for {route_class(scope)}"
    response = problem_response(status, detail, slug=slug, instance=scope["path"], headers=decision.headers())
    if scope["type"] == "http":
        return await response(scope, receive, send)
    # WebSocket: answer the handshake with the status when the server supports it, else close (1013).
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(problem_body(status, detail, slug=slug, instance=scope["path"])).encode()
        headers = [(b"content-type", b"application/problem+json"),
                   *[(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
