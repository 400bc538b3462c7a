"""Request metrics, and the caller's tenant on the request span.

A pure ASGI middleware (add it last: outermost among ours, so a 429 or 413 from the inner ones is
measured too):

- every HTTP request is observed in ``http_server_request_duration_seconds{method,route,status}``,
  ``route`` being the route template (``/v1/submissions/{submission_id}``, never the raw path; a
  request the router never reached is matched against the routes here, and one that matches none is
  ``<unmatched>``);
- every accepted WebSocket counts in ``gradeflow_websocket_feeds_open{route}`` until it closes;
- the request span (FastAPI's native one, current while the app runs) gets the caller's tenant when
  the request carried a valid token, so ``trace_spans`` files the request under its tenant and the
  tenant's admins see it in ``GET /v1/traces/{id}``.

The span itself is not opened here: FastAPI's instrumentation is the only one (one trace per request).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import trace
from starlette.routing import Match

from api.auth import principal_from_scope
from infra.observability.metrics import HTTP_REQUEST_DURATION, WEBSOCKET_FEEDS_OPEN
from infra.observability.spans import TENANT_ATTR
from infra.security.tokens import Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UNMATCHED = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The template of the route that served (or would serve) ``scope``; ``<unmatched>`` if none."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        try:
            match, _ = candidate.matches(scope)
        except Exception:  # noqa: BLE001, S112 - a route that cannot judge the scope is not the one
            continue
        if match is Match.FULL and isinstance(getattr(candidate, "path", None), str):
            return str(candidate.path)
    return UNMATCHED


def _stamp_tenant(scope: Scope) -> None:
    principal = principal_from_scope(scope)
    if isinstance(principal, Principal):
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(TENANT_ATTR, principal.tenant_id)


class TelemetryMiddleware:
    """See the module docstring."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started, status = time.perf_counter(), 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                _stamp_tenant(scope)  # before the response ends the span
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            HTTP_REQUEST_DURATION.labels(scope.get("method", "GET"), route_template(scope),
                                         str(status or 500)).observe(time.perf_counter() - started)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        gauge: Any = None

        async def observe(message: Message) -> None:
            nonlocal gauge
            if message["type"] == "websocket.accept" and gauge is None:
                _stamp_tenant(scope)
                gauge = WEBSOCKET_FEEDS_OPEN.labels(route_template(scope))
                gauge.inc()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            if gauge is not None:
                gauge.dec()
