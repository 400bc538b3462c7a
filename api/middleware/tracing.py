"""Request spans: one OpenTelemetry span per HTTP request, continuing an incoming W3C ``traceparent``.

The span is current while the rest of the stack runs, so the submission's trace id (see
:func:`infra.observability.tracing.current_trace_id`), the Temporal start (``TracingInterceptor``) and every log
line of the request share its trace. Its name is ``<METHOD> <route template>`` (low cardinality for
the slow-span metric); a 5xx answer or an unhandled error marks it as failed. WebSocket connections
are long-lived and get no span.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.observability.tracing import TRACER_NAME

PROPAGATOR = TraceContextTextMapPropagator()


class TracingMiddleware:
    """Pure ASGI middleware opening the request span (add it last, so it is the outermost)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request inside its span."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1").lower(): v.decode("latin-1").strip()
                   for k, v in scope.get("headers", ()) if k.lower() in (b"traceparent", b"tracestate")}
        if "traceparent" in carrier:  # the API has always accepted upper-case hex here
            carrier["traceparent"] = carrier["traceparent"].lower()
        method = scope.get("method", "GET")
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        tracer = trace.get_tracer(TRACER_NAME)
        with tracer.start_as_current_span(f"{method} request", context=PROPAGATOR.extract(carrier),
                                          kind=SpanKind.SERVER,
                                          attributes={"http.request.method": method,
                                                      "url.path": scope.get("path", "")}) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                span.update_name(f"{method} {route or '<unmatched>'}")
                if route:
                    span.set_attribute("http.route", route)
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
