# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Tracing on real services: span export to PostgreSQL, slow-span alert, log trace ids, propagation.

Property 10 itself (API → workflow → activities → graph nodes → logs) is in
``tests/property/test_trace_propagation.py``; the helpers here are shared with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from prometheus_client import REGISTRY
from temporalio.worker import Worker

from infra.constants import EventType
from infra.events.outbox import EventEnvelope
from infra.observability.tracing import (
    NO_TRACE,
    TENANT_ATTR,
    PostgresSpanExporter,
    TraceIdFilter,
    current_trace_id,
    setup_tracing,
    trace_context,
    with_tracing,
)
from infra.temporal.starter import make_reconciler_handler
from tests.integration.infra.observability.tracing_probe import TracingLogProbe
from tests.integration.workflows.harness import choice, gf_settings, grading_workers, saver, seed  # noqa: F401
from worker import workflow_runner
from workflows.grading import GradingOutput

SPANS_OF_TRACE_SQL = "SELECT * FROM trace_spans WHERE trace_id = %s ORDER BY started_at"


# --------------------------------------------------------------------------- helpers (shared)

@pytest.fixture
def provider(gf_settings, pools):
    """The process's global tracer provider (installed once; exports to the session database)."""
    return setup_tracing(gf_settings, "gradeflow-test", pools)


async def flush(provider: Any) -> None:
    """Export every finished span now (the exporter thread writes them to ``trace_spans``)."""
    assert await asyncio.to_thread(provider.force_flush, 10_000)


async def spans_of(admin_url: str, trace_id: str) -> list[dict[str, Any]]:
    """Every exported span of a trace (owner connection: RLS does not filter)."""
    async with await psycopg.AsyncConnection.connect(admin_url, row_factory=psycopg.rows.dict_row) as conn:
        return await (await conn.execute(SPANS_OF_TRACE_SQL, (trace_id,))).fetchall()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(TraceIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logs(level: int = logging.INFO) -> Iterator[list[logging.LogRecord]]:
    """Records of every logger at ``level`` or above, each with ``trace_id`` set by the filter."""
    root = logging.getLogger()
    handler, old_level = _Collect(), root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


# --------------------------------------------------------------------------- tests

def test_setup_tracing_is_idempotent(gf_settings):
    first = setup_tracing(gf_settings, "gradeflow-test")
    assert setup_tracing(gf_settings, "other-name") is first is trace.get_tracer_provider()
    private = setup_tracing(gf_settings, "private", set_global=False)
    assert private is not first


def test_log_filter_prefers_extra_then_active_span(provider):
    logger = logging.getLogger("activities.test_tracing")
    with captured_logs() as records:
        logger.info("outside")
        with provider.get_tracer("t").start_as_current_span("s"):
            active = current_trace_id()
            logger.info("inside")
            logger.info("explicit", extra={"trace_id": "f" * 32})
    assert [r.trace_id for r in records if r.name == logger.name] == [NO_TRACE, active, "f" * 32]


def test_slow_span_logs_warning_with_trace_id_and_counts(gf_settings, caplog):
    settings = gf_settings.model_copy(update={"slow_span_ms": 2.0, "database_url": None})
    private = setup_tracing(settings, "slow-test", set_global=False)
    name = f"slow-{uuid.uuid4().hex[:8]}"
    tracer = private.get_tracer("t")
    with caplog.at_level(logging.WARNING, logger="infra.observability.tracing"):
        with tracer.start_as_current_span(f"{name}-fast"):
            pass
        with tracer.start_as_current_span(name) as span:
            time.sleep(0.01)
    trace_id = format(span.get_span_context().trace_id, "032x")
    alerts = [r for r in caplog.records if "slow span" in r.getMessage()]
    assert len(alerts) == 1 and alerts[0].trace_id == trace_id and trace_id in alerts[0].getMessage()
    assert alerts[0].span_name == name and alerts[0].duration_ms >= 10
    assert REGISTRY.get_sample_value("gradeflow_slow_spans_total", {"span_kind": "internal", "name": name}) == 1.0
    assert REGISTRY.get_sample_value("gradeflow_slow_spans_total",
                                     {"span_kind": "internal", "name": f"{name}-fast"}) is None


async def test_spans_are_exported_to_postgres_under_their_tenant(gf_settings, pg_url, pg_admin_url):
    settings = gf_settings.model_copy(update={"database_url": pg_url})
    private = setup_tracing(settings, "export-test", set_global=False)
    tracer, tenant, other = private.get_tracer("t"), f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("root") as root:
        with tracer.start_as_current_span("child", attributes={TENANT_ATTR: tenant, "k": 1}):
            pass
        with tracer.start_as_current_span("theirs", attributes={TENANT_ATTR: other}):
            pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    await flush(private)
    rows = {r["name"]: r for r in await spans_of(pg_admin_url, trace_id)}
    assert set(rows) == {"root", "child", "theirs"}
    assert rows["child"]["parent_span_id"] == rows["root"]["span_id"] and rows["root"]["parent_span_id"] is None
    assert rows["child"]["tenant_id"] == tenant and rows["child"]["attributes"]["k"] == 1
    assert rows["root"]["service"] == "export-test" and rows["root"]["status"] == "ok"
    async with await psycopg.AsyncConnection.connect(pg_url) as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.current_tenant', %s, true)", (tenant,))
        cur = await conn.execute("SELECT name FROM trace_spans WHERE trace_id = %s", (trace_id,))
        # RLS shows a tenant its own spans only: not the other tenant's, not system spans (no tenant)
        assert {r[0] for r in await cur.fetchall()} == {"child"}
    private.shutdown()


def test_spans_are_dropped_not_blocking_while_postgres_is_down(gf_settings, closed_port):
    exporter = PostgresSpanExporter(f"postgresql://nobody@127.0.0.1:{closed_port}/none", connect_timeout=1,
                                    retry_after=30)
    private = setup_tracing(gf_settings.model_copy(update={"database_url": None}), "down", set_global=False)
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    private.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=64, max_export_batch_size=64))
    tracer = private.get_tracer("t")
    started = time.monotonic()
    for _ in range(1000):  # far more than the queue holds: the overflow is dropped, nothing waits
        with tracer.start_as_current_span("s"):
            pass
    assert time.monotonic() - started < 2.0
    spans = []
    with tracer.start_as_current_span("probe") as probe:
        spans.append(probe)
    started = time.monotonic()
    assert exporter.export(spans) == SpanExportResult.FAILURE  # within retry_after: database skipped
    assert time.monotonic() - started < 0.1
    private.shutdown()


@pytest.fixture
def closed_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_workflow_logger_lines_carry_the_trace_id(provider, temporal_client, task_queue):
    client = with_tracing(temporal_client)
    note = uuid.uuid4().hex
    with captured_logs() as records:
        async with Worker(client, task_queue=task_queue, workflows=[TracingLogProbe],
                          workflow_runner=workflow_runner()):
            with provider.get_tracer("t").start_as_current_span("caller"):
                trace_id = current_trace_id()
                await client.execute_workflow(TracingLogProbe.run, note, id=f"probe-{note}", task_queue=task_queue,
                                              run_timeout=timedelta(seconds=30))
    probes = [r for r in records if note in r.getMessage()]
    assert probes and all(r.trace_id == trace_id for r in probes)


async def test_reconciler_start_continues_the_stored_trace(provider, temporal_client, pools, saver, gf_settings,
                                                          task_queue, tenant_id, pg_admin_url):
    client = with_tracing(temporal_client)
    s = await seed(pools, tenant_id, [choice("q1"), choice("q2")], {"q1": "a", "q2": "b"})
    event = EventEnvelope(
        event_id=str(uuid.uuid4()), event_type=EventType.SUBMISSION_RECEIVED, tenant_id=tenant_id, actor_id=None,
        target_type="submission", target_id=s.submission_id, version=1, occurred_at=datetime.now(UTC),
        trace_id=s.trace_id, payload={"submission_id": s.submission_id, "exam_id": s.exam_id,
                                      "trace_id": s.trace_id})
    async with grading_workers(client, pools, saver, gf_settings, task_queue) as cog:
        assert current_trace_id() is None  # like the relay: no span is active
        await make_reconciler_handler(temporal_client, task_queue=task_queue, cognitive_queue=cog,
                                      low_confidence_threshold=0.0)(event)
        out = await client.get_workflow_handle(f"grade-{s.submission_id}", result_type=GradingOutput).result()
    assert out.status == "completed"
    await flush(provider)
    names = [r["name"] for r in await spans_of(pg_admin_url, s.trace_id)]
    for expected in ("StartWorkflow:GradingWorkflow", "RunWorkflow:GradingWorkflow",
                     "RunActivity:load_grading_context", "RunActivity:run_grading_agent",
                     "RunActivity:persist_grading_result", "node:supervisor", "node:aggregate", "node:moderate"):
        assert expected in names
    assert names.count("node:grade_question") == 2


def test_trace_context_only_adds_a_parent_when_needed(provider):
    wanted = uuid.uuid4().hex
    with trace_context(wanted):
        assert current_trace_id() == wanted
        with provider.get_tracer("t").start_as_current_span("inner"):
            assert current_trace_id() == wanted
            with trace_context(wanted):  # already in it: unchanged span
                assert trace.get_current_span().name == "inner"  # type: ignore[attr-defined]
    for bad in ("", "xyz", "0" * 32, None):
        with trace_context(bad):
            assert current_trace_id() is None


async def test_exporter_survives_a_stale_connection_and_repeated_spans(pg_url, pg_admin_url):
    """A killed backend (server restart, idle kill) or an already stored span loses no other span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from infra.observability.tracing import PostgresSpanExporter

    exporter = PostgresSpanExporter(pg_url)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("first") as first:
        pass
    trace_id = format(first.get_span_context().trace_id, "032x")
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'gradeflow-spans' AND pid <> pg_backend_pid()")
    from opentelemetry import trace as otel_trace

    with tracer.start_as_current_span("second", context=otel_trace.set_span_in_context(first)):
        pass
    assert exporter.export([first]).name == "SUCCESS"  # stored already: skipped, not a failure
    names = sorted(s["name"] for s in await spans_of(pg_admin_url, trace_id))
    assert names == ["first", "second"]
    provider.shutdown()


async def test_spans_with_hostile_text_are_stored_with_the_rest_of_their_batch(pg_url, pg_admin_url):
    """Request text reaches span names and attributes: NUL, lone surrogates and NaN never cost a batch."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from infra.observability.tracing import PostgresSpanExporter

    exporter = PostgresSpanExporter(pg_url)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET /v1/exams/x\x00") as hostile:
        hostile.set_attribute("url.path", "/v1/exams/x\x00\udc00")
        hostile.set_attribute("values", ["a\x00", "b"])
        hostile.set_attribute("ratio", float("nan"))
        with tracer.start_as_current_span("child"):
            pass
    trace_id = format(hostile.get_span_context().trace_id, "032x")
    provider.shutdown()
    stored = {s["name"]: s for s in await spans_of(pg_admin_url, trace_id)}
    assert set(stored) == {"GET /v1/exams/x\ufffd", "child"}
    assert stored["GET /v1/exams/x\ufffd"]["attributes"] == {"url.path": "/v1/exams/x\ufffd?",
                                                            "values": ["a\ufffd", "b"], "ratio": "nan"}
