"""OpenTelemetry for gradeflow: one trace from the API request to every graph node.

:func:`setup_tracing` installs the process's ``TracerProvider`` (once; later calls return it) with
its processors: :class:`~infra.observability.spans.ContextSpanProcessor` (tenant and submission from
baggage onto each span), :class:`~infra.observability.spans.SpanMetricsProcessor` (every span in
``trace_span_duration_seconds``; slow ones, by a threshold per span kind, log a throttled warning
with their trace id and count in ``gradeflow_slow_spans_total``), and the exporters:
:class:`PostgresSpanExporter` writes finished spans to ``trace_spans`` (the default, and what ``GET
/v1/traces/{id}`` and ``gradeflow trace`` read) from the SDK's export thread on its own small sync
connection; an OTLP/HTTP exporter joins it when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set. While PostgreSQL is down batches are dropped, never
queued behind a request: the export thread is the only one that waits, and it skips the database for
a few seconds after a failure.

Propagation: the API's request span is FastAPI's own (its native OpenTelemetry instrumentation is
the only HTTP instrumentation, so a request makes one trace); :class:`LenientTraceContextPropagator`
is the global propagator (W3C ``traceparent`` in either letter case, plus baggage);
:func:`with_tracing` adds Temporal's ``TracingInterceptor`` to a client (workers built from it
inherit it), so workflow and activity spans join the request's trace; :func:`trace_context` makes a
stored trace id current when no span of that trace is active (the outbox reconciler);
:func:`grading_baggage` carries the tenant and submission into the workflow; :func:`traced_node`
gives every LangGraph node a span. :class:`TraceIdFilter` puts ``trace_id`` (and ``tenant_id`` /
``submission_id`` where known) on every log record.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, default_getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from infra.observability.spans import (
    SUBMISSION_ATTR,
    SUBMISSION_BAGGAGE,
    TENANT_ATTR,
    TENANT_BAGGAGE,
    ContextSpanProcessor,
    SpanMetricsProcessor,
    slow_span_thresholds,
)

logger = logging.getLogger(__name__)

TRACER_NAME = "gradeflow"
"""Instrumentation scope of gradeflow's own spans (request, graph nodes)."""
NO_TRACE = "-"
"""``record.trace_id`` of a log record outside any trace."""
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [trace_id=%(trace_id)s]: %(message)s"
"""Log line format; needs :class:`TraceIdFilter` on the handler."""
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
"""Either one set: spans are also exported over OTLP/HTTP (the exporter reads the rest of ``OTEL_*``)."""

__all__ = ["SUBMISSION_ATTR", "TENANT_ATTR", "TRACER_NAME", "LenientTraceContextPropagator", "PostgresSpanExporter",
           "TraceIdFilter", "current_trace_id", "grading_baggage", "install_log_trace_ids", "setup_tracing",
           "trace_context", "traced_node", "with_tracing"]

INSERT_SPAN_SQL = """
INSERT INTO trace_spans (span_id, trace_id, parent_span_id, tenant_id, name, service, started_at,
                         duration_ms, status, attributes)
VALUES (%(span_id)s, %(trace_id)s, %(parent_span_id)s, %(tenant_id)s, %(name)s, %(service)s,
        %(started_at)s, %(duration_ms)s, %(status)s, %(attributes)s)
"""
# No ON CONFLICT: it needs the row to be visible to the writer, and RLS hides system spans (no tenant)
# from the application role. Span ids are random 64-bit values and each batch is exported once.
SET_TENANT_SQL = "SELECT set_config('app.current_tenant', %s, true)"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def format_trace_id(trace_id: int) -> str:
    """The 32-hex-digit form of an OpenTelemetry trace id (as in ``traceparent``)."""
    return format(trace_id, "032x")


def current_trace_id() -> str | None:
    """The trace id of the active span, or ``None`` outside any (valid) span."""
    ctx = trace.get_current_span().get_span_context()
    return format_trace_id(ctx.trace_id) if ctx.is_valid else None


def _parent_in_trace(trace_id: str | None) -> otel_context.Context | None:
    """A context whose (remote, unrecorded) parent span lies in ``trace_id``; ``None`` if not needed."""
    try:
        wanted = int(trace_id or "", 16)
    except ValueError:
        return None
    if not 0 < wanted < 2**128:
        return None
    active = trace.get_current_span().get_span_context()
    if active.is_valid and active.trace_id == wanted:
        return None
    parent = SpanContext(trace_id=wanted, span_id=RandomIdGenerator().generate_span_id(), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextmanager
def trace_context(trace_id: str | None) -> Iterator[None]:
    """Run the block inside trace ``trace_id`` unless a span of that trace is already active.

    Used where work resumes from a stored trace id (the reconciler starting a workflow, a graph run
    without an activity span): spans started in the block join that trace under a synthetic remote
    parent. Invalid or empty ids change nothing.
    """
    parent = _parent_in_trace(trace_id)
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def traced_node(name: str, node: F) -> F:
    """Wrap an async LangGraph node ``(input, runtime)`` in a span ``node:<name>``.

    The span is a child of the active span (the agent activity's); the trace comes from
    ``runtime.context.trace_id`` when none of that trace is active. ``functools.wraps`` keeps the
    node's signature and type hints, so LangGraph injects ``runtime`` and infers the same schema.
    """
    tracer = trace.get_tracer(TRACER_NAME)

    @functools.wraps(node)
    async def run(arg: Any, runtime: Any) -> Any:
        ctx = getattr(runtime, "context", None)
        attributes = {"gradeflow.node": name, "gradeflow.submission_id": str(getattr(ctx, "submission_id", "")),
                      TENANT_ATTR: str(getattr(ctx, "tenant_id", ""))}
        with trace_context(getattr(ctx, "trace_id", None)), \
                tracer.start_as_current_span(f"node:{name}", attributes=attributes):
            return await node(arg, runtime=runtime)

    return run  # type: ignore[return-value]


class TraceIdFilter(logging.Filter):
    """Give every record a ``trace_id``: its own (``extra``), else the active span's, else ``-``.

    Also ``tenant_id`` and ``submission_id`` when known: the record's own (``extra``), else the
    baggage of the current context (set where a grading starts, carried into its workflow and
    activities), else the active span's attributes; ``None`` otherwise.

    Put it on handlers (handler filters see records propagated from every logger). In workflow
    code the interceptor makes the request's span context current, so ``workflow.logger`` lines
    carry the trace id too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.trace_id`` (and the tenant and submission); never drops a record."""
        if not getattr(record, "trace_id", None):
            record.trace_id = current_trace_id() or NO_TRACE
        for field, key, attr in (("tenant_id", TENANT_BAGGAGE, TENANT_ATTR),
                                 ("submission_id", SUBMISSION_BAGGAGE, SUBMISSION_ATTR)):
            if not getattr(record, field, None):
                setattr(record, field, _context_value(key, attr))
        return True


def _context_value(baggage_key: str, attribute: str) -> str | None:
    value = baggage.get_baggage(baggage_key)
    if not value:
        attributes = getattr(trace.get_current_span(), "attributes", None) or {}
        value = attributes.get(attribute)
    return str(value) if value else None


@contextmanager
def grading_baggage(tenant_id: str, submission_id: str) -> Iterator[None]:
    """Carry ``tenant_id`` and ``submission_id`` as baggage in the block (and into workflows it starts).

    Every span started under it (here, and in the workflow and activities, through Temporal's
    headers) is stamped with them, and log lines name them.
    """
    ctx = baggage.set_baggage(TENANT_BAGGAGE, tenant_id)
    ctx = baggage.set_baggage(SUBMISSION_BAGGAGE, submission_id, ctx)
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


class _LowerTraceparent(Getter[CarrierT]):
    """Reads carriers through ``getter``, ``traceparent`` in lower case."""

    def __init__(self, getter: Getter[CarrierT]) -> None:
        self._getter = getter

    def get(self, carrier: CarrierT, key: str) -> list[str] | None:
        values = self._getter.get(carrier, key)
        if values and key.lower() == "traceparent":
            return [v.strip().lower() for v in values]
        return values

    def keys(self, carrier: CarrierT) -> list[str]:
        return self._getter.keys(carrier)


class LenientTraceContextPropagator(TraceContextTextMapPropagator):
    """W3C trace context that also accepts an upper-case ``traceparent`` (the API always has)."""

    def extract(self, carrier: CarrierT, context: otel_context.Context | None = None,
                getter: Getter[CarrierT] = default_getter) -> otel_context.Context:
        """Extract as the W3C propagator does, from a lower-cased ``traceparent``."""
        return super().extract(carrier, context, _LowerTraceparent(getter))


def install_log_trace_ids(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Add a :class:`TraceIdFilter` to ``handlers`` (default: the root logger's), once each."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())


def _storable(value: Any) -> Any:
    """``value`` as PostgreSQL text/jsonb can hold it: NUL → U+FFFD, lone surrogates → ``?``, NaN → ``"nan"``."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def span_row(span: ReadableSpan) -> dict[str, Any]:
    """The ``trace_spans`` row of a finished span (its text made storable, see :func:`_storable`)."""
    ctx = span.get_span_context()
    assert ctx is not None
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    attributes = {_storable(str(k)): _storable(v) for k, v in (span.attributes or {}).items()}
    tenant = attributes.get(TENANT_ATTR) or None
    return {
        "span_id": format(ctx.span_id, "016x"),
        "trace_id": format_trace_id(ctx.trace_id),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "tenant_id": str(tenant) if tenant else None,
        "name": _storable(span.name),
        "service": _storable(str(span.resource.attributes.get("service.name", "gradeflow"))),
        "started_at": datetime.fromtimestamp(start / 1e9, UTC),
        "duration_ms": (end - start) / 1e6,
        "status": "error" if span.status.status_code is StatusCode.ERROR else "ok",
        "attributes": json.dumps(attributes, default=str),
    }


class PostgresSpanExporter(SpanExporter):
    """Writes span batches to ``trace_spans`` over one lazily opened sync connection.

    Called from the ``BatchSpanProcessor`` thread only. Rows are grouped per tenant, each group in
    one transaction under that tenant's RLS setting. A failed write drops the batch, closes the
    connection and skips the database for ``retry_after`` seconds (batches meanwhile are dropped).

    Args:
        conninfo: PostgreSQL URL/conninfo of the application role.
        connect_timeout: seconds one connection attempt may take.
        retry_after: seconds the database is skipped after a failure.

    """

    def __init__(self, conninfo: str, *, connect_timeout: int = 2, retry_after: float = 5.0) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._retry_after = retry_after
        self._conn: psycopg.Connection[Any] | None = None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write one batch; ``FAILURE`` (batch dropped) while PostgreSQL is unreachable."""
        by_tenant: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for span in spans:
            row = span_row(span)
            by_tenant[row["tenant_id"]].append(row)
        with self._lock:
            if time.monotonic() < self._down_until:
                return SpanExportResult.FAILURE
            try:
                try:
                    self._write(by_tenant)
                except psycopg.OperationalError:
                    # The kept connection may have gone stale (server restart, idle kill): one fresh try.
                    self._close()
                    self._write(by_tenant)
            except Exception as exc:  # noqa: BLE001 - tracing must never take the process down
                self._close()
                self._down_until = time.monotonic() + self._retry_after
                logger.warning("dropped %d spans: trace_spans write failed (%s: %s); next try in %gs",
                               len(spans), type(exc).__name__, exc, self._retry_after)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _write(self, by_tenant: dict[str | None, list[dict[str, Any]]]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout,
                                         application_name="gradeflow-spans",
                                         options="-c statement_timeout=5000")
        conn = self._conn
        for tenant, rows in by_tenant.items():
            try:
                self._insert(conn, tenant, rows)
            except (psycopg.IntegrityError, psycopg.DataError):
                # A span stored before (e.g. re-exported) or one PostgreSQL refuses: keep the others.
                for row in rows:
                    try:
                        self._insert(conn, tenant, [row])
                    except (psycopg.IntegrityError, psycopg.DataError) as exc:
                        logger.debug("span %s not stored: %s", row["span_id"], exc)

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], tenant: str | None, rows: list[dict[str, Any]]) -> None:
        with conn.transaction(), conn.cursor() as cur:
            if tenant:
                cur.execute(SET_TENANT_SQL, (tenant,))
            cur.executemany(INSERT_SPAN_SQL, rows)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def shutdown(self) -> None:
        """Close the connection."""
        with self._lock:
            self._close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here (the batch processor buffers)."""
        return True


def otlp_configured(environ: Any = None) -> bool:
    """Whether the standard OTLP endpoint variables ask for span export over OTLP."""
    import os

    env = os.environ if environ is None else environ
    return any(env.get(name) for name in OTLP_ENDPOINT_VARIABLES)


def _otlp_processor() -> BatchSpanProcessor | None:
    """A batch processor exporting over OTLP/HTTP (``OTEL_EXPORTER_OTLP_*`` configure it); ``None`` if not set."""
    if not otlp_configured():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter(), max_queue_size=4096, schedule_delay_millis=1000,
                              max_export_batch_size=512)


def setup_tracing(settings: Any, service_name: str, pools: Any = None, *,
                  set_global: bool = True) -> TracerProvider:
    """Set up OpenTelemetry for this process; idempotent.

    Args:
        settings: supplies ``slow_span_ms``, ``slow_span_ms_by_kind``, ``trace_store_postgres`` and
            ``database_url``.
        service_name: ``service.name`` of the spans (``trace_spans.service``).
        pools: the process's :class:`infra.db.pools.PoolManager`; its conninfo is used for the exporter's
            own connection (default: ``settings.database_url``; neither: no export).
        set_global: install the provider as OpenTelemetry's global one (the API does not allow
            replacing it, so a second call returns the installed provider unchanged). ``False``
            builds a private provider (tests).

    Returns:
        The provider spans go to.

    """
    installed = trace.get_tracer_provider()
    if set_global and isinstance(installed, TracerProvider):
        return installed
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(ContextSpanProcessor())
    thresholds = slow_span_thresholds(float(settings.slow_span_ms), getattr(settings, "slow_span_ms_by_kind", None))
    provider.add_span_processor(SpanMetricsProcessor(thresholds))
    conninfo = getattr(getattr(pools, "pool", None), "conninfo", None)
    if not isinstance(conninfo, str):
        conninfo = str(settings.database_url) if getattr(settings, "database_url", None) else None
    if conninfo and getattr(settings, "trace_store_postgres", True):
        provider.add_span_processor(BatchSpanProcessor(PostgresSpanExporter(conninfo), max_queue_size=4096,
                                                       schedule_delay_millis=1000, max_export_batch_size=512))
    otlp = _otlp_processor()
    if otlp is not None:
        provider.add_span_processor(otlp)
    if set_global:
        propagate.set_global_textmap(CompositePropagator([LenientTraceContextPropagator(), W3CBaggagePropagator()]))
        trace.set_tracer_provider(provider)
    return provider


def with_tracing(client: Any) -> Any:
    """The Temporal ``client`` with ``TracingInterceptor`` (same connection); ``None`` stays ``None``.

    Workers created from the returned client inherit the interceptor, so workflow and activity spans
    continue the caller's trace. A client that already has one is returned as is.
    """
    if client is None:
        return None
    from temporalio.client import Client
    from temporalio.contrib.opentelemetry import TracingInterceptor

    config = client.config()
    if any(isinstance(i, TracingInterceptor) for i in config["interceptors"]):
        return client
    config["interceptors"] = [*config["interceptors"], TracingInterceptor()]
    return Client(**config)
