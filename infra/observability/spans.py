"""What every finished span is measured against: its kind, its duration metric, the slow-span alert.

:func:`span_kind` sorts spans into ``http`` (a request), ``websocket`` (a whole live-feed session),
``workflow`` and ``activity`` (Temporal's interceptor spans), ``node`` (a LangGraph node) and
``internal``. :class:`SpanMetricsProcessor` records every span in
``trace_span_duration_seconds{span_kind,status}`` and alerts on the slow ones with a threshold per
kind: a grader node waiting on a model or a busy CPU is not slow at 1 s, and a WebSocket session is
long by design, so it never alerts. The warning is throttled per span name (one line per
:data:`ALERT_LOG_INTERVAL` seconds, saying how many more were slow meanwhile); the counter
``gradeflow_slow_spans_total{span_kind,name}`` counts every one.

:class:`ContextSpanProcessor` stamps each span with the tenant and submission carried in OpenTelemetry
baggage (set where a grading starts, propagated into workflows and activities by Temporal's
interceptor), so ``trace_spans`` rows belong to their tenant and row-level security shows a tenant
the whole tree of its own gradings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from infra.observability.metrics import SLOW_SPANS, SPAN_DURATION

logger = logging.getLogger("infra.observability.tracing")

TENANT_ATTR = "gradeflow.tenant_id"
"""Span attribute copied to ``trace_spans.tenant_id`` (row-level security)."""
SUBMISSION_ATTR = "gradeflow.submission_id"
"""Span attribute naming the submission a span worked on."""
TENANT_BAGGAGE = "gradeflow.tenant_id"
"""Baggage entry carrying the tenant across processes (Temporal headers)."""
SUBMISSION_BAGGAGE = "gradeflow.submission_id"
"""Baggage entry carrying the submission across processes."""

ACTIVITY_PREFIXES = frozenset({"RunActivity", "StartActivity"})
WORKFLOW_ATTR = "temporalWorkflowID"
"""Attribute Temporal's ``TracingInterceptor`` puts on its spans."""

DEFAULT_SLOW_SPAN_MS: Mapping[str, float] = {"node": 10_000.0, "activity": 120_000.0, "workflow": 120_000.0,
                                             "websocket": 0.0}
"""Built-in thresholds by kind, milliseconds (0: never slow); ``http`` and ``internal`` use
``GRADEFLOW_SLOW_SPAN_MS``. ``GRADEFLOW_SLOW_SPAN_MS_BY_KIND`` overrides single kinds."""
ALERT_LOG_INTERVAL = 60.0
"""Seconds between two slow-span warnings of one span name (the rest are counted, then summarised)."""


def span_kind(span: ReadableSpan) -> str:
    """``http``, ``websocket``, ``workflow``, ``activity``, ``node`` or ``internal``."""
    attributes = span.attributes or {}
    name = span.name or ""
    if attributes.get("network.protocol.name") == "websocket" or name.startswith("WS "):
        return "websocket"
    if span.kind is SpanKind.SERVER and "http.request.method" in attributes:
        return "http"
    if name.startswith("node:"):
        return "node"
    prefix = name.split(":", 1)[0]
    if prefix in ACTIVITY_PREFIXES:
        return "activity"
    if WORKFLOW_ATTR in attributes:
        return "workflow"
    return "internal"


def slow_span_thresholds(default_ms: float, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Threshold per kind in milliseconds: ``default_ms`` for http/internal, the built-ins, then ``overrides``."""
    thresholds = {"http": default_ms, "internal": default_ms, **DEFAULT_SLOW_SPAN_MS}
    thresholds.update({kind: float(ms) for kind, ms in (overrides or {}).items()})
    return thresholds


class SpanMetricsProcessor(SpanProcessor):
    """Measures every finished span and alerts on the slow ones (see the module docstring).

    Args:
        thresholds: milliseconds per span kind; a kind missing or at 0 never alerts.
        log_interval: seconds between two warnings for one span name.

    """

    def __init__(self, thresholds: Mapping[str, float], *, log_interval: float = ALERT_LOG_INTERVAL) -> None:
        self.thresholds = dict(thresholds)
        self.log_interval = log_interval
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def on_end(self, span: ReadableSpan) -> None:
        """Record the span; alert if it exceeds its kind's threshold."""
        if span.start_time is None or span.end_time is None:
            return
        kind = span_kind(span)
        seconds = max(0.0, (span.end_time - span.start_time) / 1e9)
        status = "error" if span.status.status_code is StatusCode.ERROR else "ok"
        SPAN_DURATION.labels(kind, status).observe(seconds)
        threshold_ms = self.thresholds.get(kind, 0.0)
        if threshold_ms <= 0 or seconds * 1000 <= threshold_ms:
            return
        SLOW_SPANS.labels(kind, span.name).inc()
        self._alert(span, kind, seconds * 1000, threshold_ms)

    def _alert(self, span: ReadableSpan, kind: str, duration_ms: float, threshold_ms: float) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(span.name)
            if last is not None and now - last < self.log_interval:
                self._suppressed[span.name] = self._suppressed.get(span.name, 0) + 1
                return
            self._last_logged[span.name] = now
            more = self._suppressed.pop(span.name, 0)
        ctx = span.get_span_context()
        trace_id = format(ctx.trace_id, "032x") if ctx is not None else "-"
        since = f" (+{more} more slow since the last warning)" if more else ""
        logger.warning("slow span %s: %.1f ms (%s threshold %g ms) trace_id=%s%s", span.name, duration_ms, kind,
                       threshold_ms, trace_id, since,
                       extra={"trace_id": trace_id, "span_name": span.name, "span_kind": kind,
                              "duration_ms": duration_ms, "suppressed": more})


class ContextSpanProcessor(SpanProcessor):
    """Copies the tenant and submission from baggage onto each span as it starts (see the module docstring)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Set ``gradeflow.tenant_id`` / ``gradeflow.submission_id`` unless the span has them already."""
        attributes = span.attributes or {}
        for attr, key in ((TENANT_ATTR, TENANT_BAGGAGE), (SUBMISSION_ATTR, SUBMISSION_BAGGAGE)):
            if attributes.get(attr):
                continue
            value: Any = baggage.get_baggage(key, parent_context)
            if value:
                span.set_attribute(attr, str(value))
