"""Prometheus metrics of every gradeflow process, declared in this one module.

The metrics live in prometheus-client's process-wide ``REGISTRY`` (its convention: declared once at
import, served by whichever process imports them). Names follow the Prometheus conventions (base units,
``_seconds``/``_bytes``, counters end in ``_total``): the design's operational metrics keep their
names verbatim (``pool_connections_*``, ``cache_hit_rate`` with ``cache_hits_total`` /
``cache_misses_total``, ``saga_transaction_duration_seconds``, ``trace_span_duration_seconds``), HTTP
requests use OpenTelemetry's ``http_server_request_duration_seconds``, everything else is under
``gradeflow_``. ``deploy/prometheus/alerts.yml`` and the Grafana dashboard are built from these names.

Where they are served: the API at ``GET /metrics`` (its own port); a worker or the relay on
``GRADEFLOW_WORKER_METRICS_PORT`` / ``GRADEFLOW_RELAY_METRICS_PORT`` (:func:`start_metrics_server`);
the Temporal SDK's own metrics on ``GRADEFLOW_TEMPORAL_SDK_METRICS_PORT`` (:func:`temporal_runtime`).

Gauges that describe live objects (pools, cache windows, free disk) are read when scraped, from the
objects registered with :data:`POOLS`, :data:`CACHE_RATES` and :data:`DISK`; nothing polls them.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

disable_created_metrics()  # no ``*_created`` series: Prometheus does not use them, they only double the output

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Requests and small operations, seconds."""
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Gradings, agent runs and lags, seconds."""
SPAN_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
"""Spans, from a graph node (milliseconds) to a WebSocket session (minutes), seconds."""

# --------------------------------------------------------------------------- API

HTTP_REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds", "HTTP requests by method, route template and status code",
    ["method", "route", "status"], buckets=FAST_BUCKETS)
WEBSOCKET_FEEDS_OPEN = Gauge(
    "gradeflow_websocket_feeds_open", "WebSocket live feeds open now (accepted, not yet closed)", ["route"])
RATE_LIMIT_REFUSALS = Counter(
    "gradeflow_rate_limit_refusals_total",
    "Requests refused by the rate limiter: over the limit (429) or the limit could not be checked (503)",
    ["route_class", "reason"])
SLOW_LIST_QUERIES = Counter(
    "gradeflow_slow_list_queries_total", "List queries slower than GRADEFLOW_SLOW_QUERY_MS", ["resource"])

# --------------------------------------------------------------------------- grading

GRADING_DURATION = Histogram(
    "gradeflow_grading_duration_seconds", "One run of the grading agent (one activity attempt), by outcome",
    ["outcome"], buckets=SLOW_BUCKETS)
QUESTIONS_GRADED = Counter(
    "gradeflow_questions_graded_total", "Questions graded, by grader (choice, numeric, text, llm, ...)", ["grader"])
QUESTION_GRADING_DURATION = Histogram(
    "gradeflow_question_grading_duration_seconds", "Grading one answer, by grader", ["grader"],
    buckets=FAST_BUCKETS + (30.0, 60.0))
AGENT_ATTEMPT_RETRIES = Counter(
    "gradeflow_agent_attempt_retries_total",
    "Grading agent attempts that started because the previous attempt was lost, by its cause "
    "(heartbeat_timeout: the worker died or stalled)", ["cause"])
SUBMISSIONS_FINALIZED = Counter(
    "gradeflow_submissions_finalized_total",
    "Submissions that reached a final status (counted once per committed status event, by the relay)", ["status"])
CHECKPOINT_BYTES_WRITTEN = Counter(
    "gradeflow_checkpoint_bytes_written_total", "Checkpoint payload bytes stored, by encoding (zstd or raw)",
    ["encoding"])
CHECKPOINT_PAYLOAD_BYTES = Counter(
    "gradeflow_checkpoint_payload_bytes_total", "Checkpoint payload bytes before compression")

# --------------------------------------------------------------------------- outbox, relay, dead letters

OUTBOX_PENDING = Gauge("gradeflow_outbox_pending_events", "Outbox events not yet published (all tenants)")
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "gradeflow_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox event (0 when none)")
OUTBOX_FAILED = Gauge("gradeflow_outbox_failed_events", "Outbox events given up (dead-lettered, not yet resolved)")
RELAY_PUBLISH_LAG = Histogram(
    "gradeflow_relay_publish_lag_seconds", "Time from an outbox event's commit to its publication",
    buckets=SLOW_BUCKETS)
RELAY_EVENTS_PUBLISHED = Counter(
    "gradeflow_relay_events_published_total", "Outbox events published by this relay", ["event_type"])
DEAD_LETTERS = Gauge(
    "gradeflow_dead_letters", "Dead letters (dlq_items) by kind (outbox, external_event, submission, ...) and status "
    "(open, replayed, discarded, resolved)", ["kind", "status"])
BACKLOG_SAMPLE_ERRORS = Counter(
    "gradeflow_backlog_sample_errors_total", "Failed samples of the outbox backlog or the dead letters")

# --------------------------------------------------------------------------- webhooks

WEBHOOK_DELIVERIES = Counter(
    "gradeflow_webhook_deliveries_total", "Webhook delivery attempts by outcome: delivered (2xx), retry (failed, "
    "another attempt scheduled), dead_lettered (the last attempt failed), refused (the URL's address is not "
    "allowed)", ["outcome"])
WEBHOOK_DELIVERY_DURATION = Histogram(
    "gradeflow_webhook_delivery_duration_seconds", "Time of one webhook request (address check, connect, answer)",
    buckets=FAST_BUCKETS)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "gradeflow_webhook_endpoints_disabled_total", "Webhook endpoints disabled after failing for the disable window")
WEBHOOK_OUTCOMES = ("delivered", "retry", "dead_lettered", "refused")

# --------------------------------------------------------------------------- backups

BACKUPS = Counter(
    "gradeflow_backups_total", "Backups made, by result: verified (restored into a scratch database, row counts "
    "equal), unverified (verification off), verification_failed, failed (no backup written)", ["result"])
BACKUP_LAST_VERIFIED = Gauge(
    "gradeflow_backup_last_verified_timestamp_seconds", "Unix time of the last backup whose verification passed")
BACKUP_SIZE = Gauge("gradeflow_backup_size_bytes", "Size of the last backup file written")
BACKUP_DURATION = Histogram(
    "gradeflow_backup_duration_seconds", "Time to dump (and verify) a backup", buckets=SLOW_BUCKETS)

# --------------------------------------------------------------------------- sagas, spans

SAGA_DURATION = Histogram(
    "saga_transaction_duration_seconds", "Sagas from start to their final status", ["saga_type", "status"],
    buckets=FAST_BUCKETS)
SPAN_DURATION = Histogram(
    "trace_span_duration_seconds", "Finished spans by kind (http, websocket, workflow, activity, node, internal) "
    "and status", ["span_kind", "status"], buckets=SPAN_BUCKETS)
SLOW_SPANS = Counter(
    "gradeflow_slow_spans_total", "Spans slower than their kind's threshold (GRADEFLOW_SLOW_SPAN_MS...)",
    ["span_kind", "name"])

# --------------------------------------------------------------------------- cache

CACHE_HITS = Counter("cache_hits_total", "Cache lookups served from the cache", ["cache_layer"])
CACHE_MISSES = Counter("cache_misses_total", "Cache lookups that went to PostgreSQL", ["cache_layer"])

CACHE_LAYERS = ("redis", "rubric")
"""``redis``: hot copies of submissions (cache-aside reads); ``rubric``: a worker's in-process rubric cache."""
ROUTE_CLASSES = ("submit", "read", "websocket")
SPAN_KINDS = ("http", "websocket", "workflow", "activity", "node", "internal")
RETRY_CAUSES = ("heartbeat_timeout", "start_to_close_timeout", "error", "unknown")


def _initialise() -> None:
    """Create the known label sets at 0, so every series exists before its first event."""
    for layer in CACHE_LAYERS:
        CACHE_HITS.labels(layer)
        CACHE_MISSES.labels(layer)
    for route_class in ROUTE_CLASSES:
        for reason in ("limit", "unavailable"):
            RATE_LIMIT_REFUSALS.labels(route_class, reason)
    for cause in RETRY_CAUSES:
        AGENT_ATTEMPT_RETRIES.labels(cause)
    for result in ("verified", "unverified", "verification_failed", "failed"):
        BACKUPS.labels(result)
    for outcome in WEBHOOK_OUTCOMES:
        WEBHOOK_DELIVERIES.labels(outcome)


_initialise()


# --------------------------------------------------------------------------- scrape-time gauges

@dataclass(frozen=True)
class PoolSample:
    """One pool's connections at scrape time."""

    active: int
    idle: int
    waiting: int
    max: int


class PoolCollector(Collector):
    """``pool_connections_{active,idle,waiting,max}{pool_type,instance}`` read from live pools.

    A pool is tracked with :meth:`track` (returns the function that untracks it) and read on every
    scrape: nothing is sampled in between, and a closed pool simply disappears.
    """

    NAMES = ("active", "idle", "waiting", "max")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[int, tuple[str, str, Callable[[], PoolSample | None]]] = {}
        self._next = 0

    def track(self, pool_type: str, instance: str, read: Callable[[], PoolSample | None]) -> Callable[[], None]:
        """Read ``read()`` on every scrape as pool ``(pool_type, instance)``; call the result to stop."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._sources[key] = (pool_type, instance, read)

        def untrack() -> None:
            with self._lock:
                self._sources.pop(key, None)
        return untrack

    def _families(self) -> dict[str, GaugeMetricFamily]:
        docs = {"active": "Connections lent out now", "idle": "Open connections waiting in the pool",
                "waiting": "Callers waiting for a connection", "max": "Most connections the pool may open"}
        return {name: GaugeMetricFamily(f"pool_connections_{name}", docs[name], labels=["pool_type", "instance"])
                for name in self.NAMES}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families (so registering does not call :meth:`collect`)."""
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per tracked pool and family."""
        families = self._families()
        with self._lock:
            sources = list(self._sources.values())
        for pool_type, instance, read in sources:
            try:
                sample = read()
            except Exception as exc:  # noqa: BLE001 - a broken pool must not break the scrape
                logger.debug("pool %s/%s not sampled: %r", pool_type, instance, exc)
                continue
            if sample is None:
                continue
            for name in self.NAMES:
                families[name].add_metric([pool_type, instance], getattr(sample, name))
        yield from families.values()


def psycopg_pool_sample(pool: Any) -> PoolSample:
    """A psycopg ``AsyncConnectionPool``'s sample (from ``get_stats()``)."""
    stats = pool.get_stats()
    size, available = int(stats.get("pool_size", 0)), int(stats.get("pool_available", 0))
    return PoolSample(active=max(0, size - available), idle=available,
                      waiting=int(stats.get("requests_waiting", 0)), max=int(stats.get("pool_max", pool.max_size)))


def redis_pool_sample(redis: Any) -> PoolSample:
    """A ``redis.asyncio`` client's connection-pool sample (no waiters: its pool never queues)."""
    pool = redis.connection_pool
    in_use = len(getattr(pool, "_in_use_connections", ()) or ())
    available = len(getattr(pool, "_available_connections", ()) or ())
    return PoolSample(active=in_use, idle=available, waiting=0, max=int(pool.max_connections or 0))


class CacheRateCollector(Collector):
    """``cache_hit_rate{cache_layer}``: the share of hits among the last :attr:`window` lookups of a layer.

    The counters ``cache_hits_total`` / ``cache_misses_total`` are the ones to alert on
    (``rate()`` over any window); this gauge answers "how is the cache doing right now" without PromQL.
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._recent: dict[str, deque[bool]] = {}

    def record(self, layer: str, hit: bool) -> None:
        """Remember one lookup's outcome."""
        with self._lock:
            self._recent.setdefault(layer, deque(maxlen=self.window)).append(hit)

    def rate(self, layer: str) -> float | None:
        """Hits / lookups over the window (``None`` before the first lookup)."""
        with self._lock:
            recent = self._recent.get(layer)
            return sum(recent) / len(recent) if recent else None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The family (so registering does not call :meth:`collect`)."""
        yield GaugeMetricFamily("cache_hit_rate", "", labels=["cache_layer"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One sample per layer looked up so far."""
        family = GaugeMetricFamily(
            "cache_hit_rate", f"Share of hits among the last {self.window} lookups of a cache layer (0..1)",
            labels=["cache_layer"])
        with self._lock:
            layers = list(self._recent)
        for layer in layers:
            rate = self.rate(layer)
            if rate is not None:
                family.add_metric([layer], rate)
        yield family


class DiskCollector(Collector):
    """``gradeflow_data_dir_free_bytes`` / ``_size_bytes``: the data folder's file system, read when scraped."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families (so registering does not call :meth:`collect`)."""
        yield GaugeMetricFamily("gradeflow_data_dir_free_bytes", "")
        yield GaugeMetricFamily("gradeflow_data_dir_size_bytes", "")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Free and total bytes of the file system holding :attr:`path` (nothing before it is set)."""
        free = GaugeMetricFamily("gradeflow_data_dir_free_bytes",
                                 "Free bytes of the file system holding GRADEFLOW_DATA_DIR")
        size = GaugeMetricFamily("gradeflow_data_dir_size_bytes",
                                 "Total bytes of the file system holding GRADEFLOW_DATA_DIR")
        usage = disk_usage(self.path) if self.path is not None else None
        if usage is not None:
            free.add_metric([], usage.free)
            size.add_metric([], usage.total)
        yield free
        yield size


def disk_usage(path: Path) -> Any:
    """``shutil.disk_usage`` of ``path`` or its nearest existing parent; ``None`` if none can be read."""
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe)
    except OSError:
        return None


POOLS = PoolCollector()
"""Every open pool of this process (:class:`infra.db.pools.PoolManager` tracks itself)."""
CACHE_RATES = CacheRateCollector()
"""Recent cache outcomes per layer (:func:`record_cache_lookup` feeds it)."""
DISK = DiskCollector()
"""The data folder's disk (the API sets ``DISK.path``)."""
for _collector in (POOLS, CACHE_RATES, DISK):
    REGISTRY.register(_collector)


def record_cache_lookup(layer: str, *, hit: bool) -> None:
    """Count one lookup of cache ``layer`` (``redis`` or ``rubric``) as a hit or a miss."""
    (CACHE_HITS if hit else CACHE_MISSES).labels(layer).inc()
    CACHE_RATES.record(layer, hit)


def count_rate_limit_refusals(hit: F) -> F:
    """Decorate ``RateLimiter.hit(tenant_id, route_class, ...)``: count the decisions that refuse."""

    @functools.wraps(hit)
    async def counted(self: Any, tenant_id: str, route_class: str, *args: Any, **kwargs: Any) -> Any:
        decision = await hit(self, tenant_id, route_class, *args, **kwargs)
        if not decision.allowed:
            reason = "unavailable" if getattr(decision, "unavailable", False) else "limit"
            RATE_LIMIT_REFUSALS.labels(route_class, reason).inc()
        return decision

    return counted  # type: ignore[return-value]


# --------------------------------------------------------------------------- serving

def start_metrics_server(port: int, host: str = "127.0.0.1") -> Callable[[], None] | None:
    """Serve this process's metrics at ``http://host:port/metrics`` (a daemon thread); ``0``: not at all.

    Returns:
        A function that stops the server, or ``None`` when ``port`` is 0.

    Raises:
        OSError: the port is taken (the message names it).

    """
    if not port:
        return None
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host)
    logger.info("metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
    return stop


def temporal_runtime(port: int, host: str = "127.0.0.1") -> Any | None:
    """A Temporal SDK ``Runtime`` exporting its metrics for Prometheus on ``host:port``; ``0``: ``None``.

    Names follow the Prometheus conventions (``_total`` counters, durations in seconds with a
    ``_seconds`` suffix), e.g. ``temporal_activity_execution_latency_seconds``. Pass it to
    ``Client.connect(..., runtime=...)``; workers built on that client report through it.
    """
    if not port:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"{host}:{port}", counters_total_suffix=True, unit_suffix=True, durations_as_seconds=True)))
