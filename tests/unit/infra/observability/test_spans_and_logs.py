"""Span kinds, per-kind slow-span thresholds and their throttled alert, JSON logs, span trees, metric helpers."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from infra.observability.logs import JsonFormatter, configure_logging
from infra.observability.metrics import CacheRateCollector, count_rate_limit_refusals
from infra.observability.spans import (
    ContextSpanProcessor,
    SpanMetricsProcessor,
    slow_span_thresholds,
    span_kind,
)
from infra.observability.spantree import build_tree, render_tree
from infra.observability.tracing import LenientTraceContextPropagator, TraceIdFilter, grading_baggage
from infra.stack.metrics_ports import metrics_banner, metrics_urls


class Clock:
    """Span timestamps we choose: ``span(name, seconds, ...)`` ends a span that lasted ``seconds``."""

    def __init__(self, *processors) -> None:
        self.provider = TracerProvider()
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("t")
        self.now = 1_000_000_000_000

    def span(self, name: str, seconds: float, *, kind: SpanKind = SpanKind.INTERNAL, attributes=None):
        span = self.tracer.start_span(name, kind=kind, attributes=attributes, start_time=self.now)
        self.now += int(seconds * 1e9)
        span.end(end_time=self.now)
        return span


def slow(span_kind_: str, name: str) -> float:
    return REGISTRY.get_sample_value("gradeflow_slow_spans_total", {"span_kind": span_kind_, "name": name}) or 0.0


def test_span_kinds():
    clock = Clock()
    assert span_kind(clock.span("GET /v1/exams", 0, kind=SpanKind.SERVER,
                                attributes={"http.request.method": "GET"})) == "http"
    assert span_kind(clock.span("WS /v1/ws/submissions/{submission_id}", 0, kind=SpanKind.SERVER,
                                attributes={"network.protocol.name": "websocket"})) == "websocket"
    assert span_kind(clock.span("node:grade_question", 0)) == "node"
    assert span_kind(clock.span("RunActivity:run_grading_agent", 0, attributes={"temporalWorkflowID": "w"})) == \
        "activity"
    assert span_kind(clock.span("RunWorkflow:GradingWorkflow", 0, attributes={"temporalWorkflowID": "w"})) == \
        "workflow"
    assert span_kind(clock.span("something", 0)) == "internal"


def test_thresholds_per_kind_and_overrides():
    thresholds = slow_span_thresholds(1000, {"node": 500, "custom": 7})
    assert thresholds["http"] == thresholds["internal"] == 1000
    assert thresholds["node"] == 500 and thresholds["websocket"] == 0 and thresholds["activity"] == 120_000
    assert thresholds["custom"] == 7


def test_long_websocket_sessions_never_alert_but_slow_requests_do(caplog):
    tag = uuid.uuid4().hex[:8]
    clock = Clock(SpanMetricsProcessor(slow_span_thresholds(1000)))
    with caplog.at_level(logging.WARNING, logger="infra.observability.tracing"):
        clock.span(f"WS /{tag}", 3600, kind=SpanKind.SERVER, attributes={"network.protocol.name": "websocket"})
        clock.span(f"node:{tag}", 5)  # a grader waiting on a model: under the node threshold
        clock.span(f"GET /{tag}", 1.5, kind=SpanKind.SERVER, attributes={"http.request.method": "GET"})
    assert slow("websocket", f"WS /{tag}") == 0 and slow("node", f"node:{tag}") == 0
    assert slow("http", f"GET /{tag}") == 1
    assert [r.span_kind for r in caplog.records if "slow span" in r.getMessage()] == ["http"]


def test_slow_span_warnings_are_throttled_per_name_but_all_counted(caplog):
    tag = uuid.uuid4().hex[:8]
    clock = Clock(SpanMetricsProcessor({"node": 100}, log_interval=3600))
    with caplog.at_level(logging.WARNING, logger="infra.observability.tracing"):
        for _ in range(50):
            clock.span(f"node:{tag}", 0.2)
        clock.span(f"node:{tag}-other", 0.2)
    warnings = [r for r in caplog.records if "slow span" in r.getMessage()]
    assert [r.span_name for r in warnings] == [f"node:{tag}", f"node:{tag}-other"]
    assert slow("node", f"node:{tag}") == 50


def test_every_span_is_measured_by_kind_and_status():
    before = REGISTRY.get_sample_value("trace_span_duration_seconds_count", {"span_kind": "node", "status": "ok"}) or 0
    clock = Clock(SpanMetricsProcessor({}))
    clock.span("node:x", 0.01)
    assert REGISTRY.get_sample_value("trace_span_duration_seconds_count",
                                     {"span_kind": "node", "status": "ok"}) == before + 1


def test_baggage_puts_tenant_and_submission_on_spans_and_log_records():
    clock = Clock(ContextSpanProcessor())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    with grading_baggage("tenant-a", "sub-1"):
        span = clock.span("RunActivity:x", 0)
        TraceIdFilter().filter(record)
    assert span.attributes["gradeflow.tenant_id"] == "tenant-a"
    assert span.attributes["gradeflow.submission_id"] == "sub-1"
    assert (record.tenant_id, record.submission_id) == ("tenant-a", "sub-1")
    assert baggage.get_baggage("gradeflow.tenant_id", otel_context.get_current()) is None  # detached again


def test_json_log_lines(tmp_path):
    stream, root = io.StringIO(), logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", "json", stream=stream)
    try:
        log = logging.getLogger("gradeflow.test")
        log.info("hello %s", "world", extra={"tenant_id": "t1", "submission_id": "s1", "trace_id": "a" * 32,
                                             "duration_ms": 12.5})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "hello world" and first["level"] == "INFO" and first["logger"] == "gradeflow.test"
    assert (first["trace_id"], first["tenant_id"], first["submission_id"]) == ("a" * 32, "t1", "s1")
    assert first["duration_ms"] == 12.5 and first["ts"].endswith("+00:00")
    assert second["trace_id"] == "-" and "tenant_id" not in second
    assert "ValueError: boom" in second["exception"]


def test_json_formatter_keeps_non_json_extras_as_text():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.when = datetime(2024, 1, 1, tzinfo=UTC)
    assert json.loads(JsonFormatter().format(record))["when"] == "2024-01-01 00:00:00+00:00"


def test_upper_case_traceparent_is_accepted():
    trace_id = "4BF92F3577B34DA6A3CE929D0E0E4736"
    ctx = LenientTraceContextPropagator().extract({"traceparent": f"00-{trace_id}-00F067AA0BA902B7-01"})
    from opentelemetry import trace

    assert format(trace.get_current_span(ctx).get_span_context().trace_id, "032x") == trace_id.lower()


def _row(span_id, parent, name, start_ms, duration_ms, status="ok"):
    return {"span_id": span_id, "parent_span_id": parent, "name": name, "service": "svc",
            "started_at": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(milliseconds=start_ms),
            "duration_ms": duration_ms, "status": status, "tenant_id": "t", "attributes": {}}


def test_span_tree_nests_children_marks_orphans_and_renders_durations():
    rows = [_row("c2", "r", "node:b", 20, 5), _row("r", None, "POST /v1/submissions", 0, 100),
            _row("c1", "r", "node:a", 10, 5, "error"), _row("g", "c1", "inner", 11, 1),
            _row("o", "gone", "RunActivity:x", 50, 30)]
    roots = build_tree(rows)
    assert [r.name for r in roots] == ["POST /v1/submissions", "RunActivity:x"]
    assert [c.name for c in roots[0].children] == ["node:a", "node:b"] and roots[1].orphan
    text = render_tree("f" * 32, roots).splitlines()
    assert text[0] == f"trace {'f' * 32}: 5 spans, 100.0 ms, 1 error(s), started 2024-01-01T00:00:00+00:00"
    assert text[1].split() == ["+0.0", "ms", "100.0", "ms", "POST", "/v1/submissions", "[svc]"]
    assert "├─ node:a [svc] ERROR" in text[2] and "│  └─ inner" in text[3] and "└─ node:b" in text[4]
    assert text[5].endswith("RunActivity:x [svc] (parent not stored)") and "+50.0 ms" in text[5]
    assert roots[0].to_dict()["children"][0]["offset_ms"] == 10.0


def test_cache_hit_rate_is_over_the_last_lookups():
    rates = CacheRateCollector(window=4)
    assert rates.rate("x") is None
    for hit in (False, False, True, True, True, True):
        rates.record("x", hit)
    assert rates.rate("x") == 1.0
    rates.record("x", False)
    assert rates.rate("x") == 0.75


async def test_rate_limit_refusals_are_counted_by_class_and_reason():
    class Decision:
        def __init__(self, allowed, unavailable=False):
            self.allowed, self.unavailable = allowed, unavailable

    class Limiter:
        @count_rate_limit_refusals
        async def hit(self, tenant_id, route_class, cost=1):
            return Decision(tenant_id == "ok", unavailable=tenant_id == "busy")

    def count(reason):
        return REGISTRY.get_sample_value("gradeflow_rate_limit_refusals_total",
                                         {"route_class": "read", "reason": reason})

    limit, busy = count("limit"), count("unavailable")
    assert (await Limiter().hit("ok", "read")).allowed
    await Limiter().hit("over", "read")
    await Limiter().hit("busy", "read")
    assert (count("limit"), count("unavailable")) == (limit + 1, busy + 1)


def test_dev_banner_lists_every_metrics_endpoint():
    envs = {"worker-orchestration": {"GRADEFLOW_WORKER_METRICS_PORT": "9101",
                                     "GRADEFLOW_TEMPORAL_SDK_METRICS_PORT": "9201"},
            "relay": {"GRADEFLOW_RELAY_METRICS_PORT": "9103"}}
    urls = metrics_urls("http://127.0.0.1:8000", envs, "http://127.0.0.1:9233/metrics")
    assert urls == [("API", "http://127.0.0.1:8000/metrics"),
                    ("worker-orchestration", "http://127.0.0.1:9101/metrics"),
                    ("worker-orchestration (Temporal SDK)", "http://127.0.0.1:9201/metrics"),
                    ("relay", "http://127.0.0.1:9103/metrics"),
                    ("Temporal server", "http://127.0.0.1:9233/metrics")]
    banner = metrics_banner(urls).splitlines()
    assert banner[0].startswith("    Metrics ") and all(url in "\n".join(banner) for _, url in urls)


@pytest.mark.parametrize("value", ["", "xyz", "0" * 32])
def test_trace_ids_are_checked(value):
    from infra.stores.traces import normalise_trace_id

    assert normalise_trace_id(value) is None
    assert normalise_trace_id("4BF92F35-77B3-4DA6-A3CE-929D0E0E4736") == "4bf92f3577b34da6a3ce929d0e0e4736"
