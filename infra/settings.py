"""Process settings, read from the environment with the ``GRADEFLOW_`` prefix.

One :class:`Settings` model holds every knob; :func:`get_settings` caches it so tests can
override it with ``get_settings.cache_clear()`` after changing the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    HttpUrl,
    NonNegativeFloat,
    PostgresDsn,
    RedisDsn,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-secret-change-me-never-use-in-production"
"""Dev/test default (32+ bytes, as RFC 7518 asks of HS256 keys); refused in prod like any placeholder."""
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "dev-secret-change-me", "secret", DEV_JWT_SECRET})
MIN_JWT_SECRET_BYTES = 32
"""Shortest HS256 secret accepted in prod (RFC 7518: a key at least as long as the hash)."""
DEFAULT_APP_DB_PASSWORD = "gradeflow-app"
"""Dev default password of the ``gradeflow_app`` role; refused in prod."""


class Settings(BaseSettings):
    """All gradeflow settings. Every field maps to ``GRADEFLOW_<FIELD_NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="GRADEFLOW_", extra="ignore", use_attribute_docstrings=True
    )

    env: Literal["dev", "test", "prod"] = "dev"
    """Deployment environment; placeholder secrets are refused outside dev/test."""

    data_dir: Path = Path(".gradeflow")
    """Folder for the embedded stack's data (PostgreSQL, Redis, Temporal)."""

    database_url: PostgresDsn | None = None
    """PostgreSQL URL of the application role. Unset: the embedded server (``gradeflow dev``)."""
    database_admin_url: PostgresDsn | None = None
    """PostgreSQL URL of an owner/superuser for migrations. Defaults to ``database_url``."""
    app_db_password: str = DEFAULT_APP_DB_PASSWORD
    """Password given to the ``gradeflow_app`` role that the migrations create (RLS applies to it)."""

    redis_url: RedisDsn | None = None
    """Redis URL. Unset: the embedded redis-server."""
    temporal_address: str | None = None
    """Temporal frontend ``host:port``. Unset: the embedded Temporal dev server."""
    temporal_namespace: str = "default"
    """Temporal namespace."""

    api_host: str = "127.0.0.1"
    """Interface the API binds to."""
    api_port: int = Field(default=8000, ge=1, le=65535)
    """API port."""
    api_url: HttpUrl | None = None
    """Base URL the client commands (exams, submit, watch, review, list) call. Unset: http://<api_host>:<api_port>."""
    token: SecretStr | None = None
    """Bearer token of the client commands (the output of ``gradeflow token``); ``--token`` overrides it."""
    trusted_proxies: str = ""
    """Comma-separated proxy addresses (IPs or CIDRs) whose X-Forwarded-For/-Proto the API believes. Empty: none."""
    ws_max_feeds_per_tenant: int = Field(default=100, ge=1)
    """Live WebSocket feeds one tenant may hold open at once on each API process (more: close code 4429)."""
    pg_port: int = Field(default=5433, ge=1, le=65535)
    """Embedded PostgreSQL TCP port (dev stack only)."""
    redis_port: int = Field(default=6380, ge=1, le=65535)
    """Embedded Redis port (dev stack only)."""
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    """Embedded Temporal gRPC port (dev stack only)."""
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    """Embedded Temporal Web UI port (dev stack only)."""
    temporal_metrics_port: int = Field(default=9233, ge=0, le=65535)
    """Embedded Temporal server's Prometheus port (dev stack only; 0: any free port)."""

    metrics_host: str = "127.0.0.1"
    """Interface the metrics ports of workers and the relay bind to (the API serves /metrics on its own port)."""
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of a worker's /metrics (0: none; ``gradeflow dev`` gives each worker one and prints it)."""
    temporal_sdk_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of a worker's Temporal SDK metrics (the SDK runtime's own Prometheus endpoint; 0: none)."""
    relay_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the relay's /metrics (0: none; ``gradeflow dev`` gives it one and prints it)."""
    metrics_sample_interval: float = Field(default=10.0, gt=0)
    """Seconds between the relay's samples of the outbox backlog and the open dead letters."""

    db_pool_min: int = Field(default=2, ge=0)
    """Minimum PostgreSQL connections kept open per process."""
    db_pool_max: int = Field(default=10, ge=1)
    """Maximum PostgreSQL connections per process."""
    db_acquire_timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for a pooled connection before raising ``PoolTimeoutError`` (API: 503)."""
    redis_max_connections: int = Field(default=50, ge=1)
    """Maximum Redis connections per process."""
    shutdown_timeout: float = Field(default=10.0, gt=0)
    """Seconds allowed for graceful shutdown of pools and workers."""

    outbox_poll_interval: float = Field(default=5.0, gt=0)
    """Seconds between safety-net polls of the outbox (LISTEN/NOTIFY wakes the relay sooner)."""
    outbox_batch_size: int = Field(default=100, ge=1)
    """Events claimed by a relay per batch."""
    outbox_max_attempts: int = Field(default=8, ge=1)
    """Logical failures of an outbox event before it is dead-lettered (``gradeflow dlq``); outages never count."""
    outbox_stream_maxlen: int = Field(default=10_000, ge=100)
    """Approximate length cap of each tenant's Redis event stream."""
    outbox_backoff_base: float = Field(default=0.5, gt=0)
    """First retry delay of a failed outbox event, seconds; it doubles per failure (with jitter)."""
    outbox_backoff_cap: float = Field(default=60.0, gt=0)
    """Longest retry delay of an outbox event, seconds: the pace of retries through an outage."""
    outbox_publish_timeout: float = Field(default=10.0, gt=0)
    """Seconds one publish to Redis may take before the relay treats Redis as unreachable."""
    outbox_dedupe_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    """How long Redis remembers that an event id is on the stream (a re-send within it appends nothing)."""

    webhook_retry_schedule: list[NonNegativeFloat] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0], min_length=1)
    """Seconds before each retry of a failed webhook delivery (JSON list; with jitter): the default is the
    Standard Webhooks schedule, 8 attempts over about 27 hours; after the last, a ``webhook`` dead letter."""
    webhook_retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    """Each retry delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
    webhook_timeout: float = Field(default=10.0, gt=0)
    """Seconds one webhook request may take (connect, send, answer) before it counts as failed."""
    webhook_disable_after_seconds: float = Field(default=86400.0, gt=0)
    """An endpoint whose deliveries have all failed for this long is disabled (status and reason in GET)."""
    webhook_secret_grace_seconds: float = Field(default=86400.0, ge=0)
    """After a secret rotation, deliveries are signed with the old secret too for this long (0: not at all)."""
    webhook_poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between the webhook dispatcher's looks for due deliveries (a new event wakes it sooner)."""
    webhook_batch_size: int = Field(default=20, ge=1)
    """Deliveries one dispatcher claims (and sends concurrently) at a time."""

    reconcile_after_seconds: float = Field(default=30.0, gt=0)
    """A submission still queued this long after intake has its grading started by the reconciler."""
    reconcile_interval_seconds: float = Field(default=10.0, gt=0)
    """Seconds between the reconciler's sweeps for stranded submissions (it runs in the relay process)."""

    heartbeat_timeout: float = Field(default=30.0, gt=0)
    """Heartbeat timeout of the grading agent activity, seconds."""
    agent_timeout: float = Field(default=900.0, gt=0)
    """Start-to-close timeout of the grading agent activity, seconds."""
    agent_max_attempts: int = Field(default=3, ge=1)
    """Agent runs a grading may spend on real grading errors (a worker crash or an outage never counts)."""
    outage_retry_timeout: float = Field(default=6 * 3600.0, gt=0)
    """Seconds activities keep retrying through an outage of PostgreSQL, Redis, Temporal or a worker."""
    retry_max_interval: float = Field(default=30.0, gt=0)
    """Longest wait between two retries of an activity, seconds."""
    review_deadline: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Seconds a needs_review submission waits for a reviewer before it is escalated."""
    batch_max_concurrent: int = Field(default=20, ge=1)
    """Most child gradings one batch runs at once; a batch request's ``max_concurrent`` is capped to it."""
    submission_lock_ttl: float = Field(default=30.0, gt=0)
    """Seconds the per-submission writer lock (``lock:submission:{id}``) lives unless renewed (every ttl/3)."""
    submission_lock_wait: float = Field(default=10.0, gt=0)
    """Seconds a change of a submission's grades waits for another writer's lock before giving up (retryable)."""
    submission_lock_outage: float = Field(default=2.0, ge=0)
    """Seconds a writer retries an unreachable Redis before changing grades without the lock (the version
    fence still refuses stale writes)."""
    progress_signal_interval: float = Field(default=2.0, ge=0)
    """Least seconds between progress signals from the agent to its workflow, and before the first one of a
    fresh run (a resumed run signals at once). Live feeds get every step through Redis regardless; the
    signals only keep the ``get_progress`` query and the Temporal Web UI current."""
    live_progress_interval: float = Field(default=0.1, ge=0)
    """Least seconds between two live ``grading.progress`` messages of one agent run (the first and last always
    go out; a skipped step's questions ride on the next). 0: a message per graph step."""
    low_confidence_threshold: float = Field(default=0.6, ge=0, le=1)
    """Grades with confidence below this are flagged for human review."""
    llm_model: str | None = None
    """Chat model for short-answer/essay grading, e.g. ``openai:gpt-4o-mini``. Unset: rubric engine."""
    cognitive_max_concurrent: int = Field(default=0, ge=0)
    """Most agent runs one cognitive worker process takes at once (0: the Temporal SDK's default, 100). With
    several processes and rubric graders (CPU-bound), about 2x the process's cores spreads the work evenly;
    model graders wait on the network and want more."""
    demo_grader_delay_seconds: float = Field(default=0.0, ge=0, le=60)
    """Seconds the cognitive worker waits after grading each question (demos: progress is watchable).
    0: none. Refused in prod."""

    jwt_secret: str = DEV_JWT_SECRET
    """HS256 secret for bearer tokens; a placeholder is refused outside dev/test."""
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    """How long idempotency keys are remembered."""
    idempotency_lease_seconds: float = Field(default=60.0, gt=0)
    """Age after which an in-flight idempotency key is presumed abandoned and may be taken over."""
    idempotency_purge_interval_minutes: float = Field(default=60.0, gt=0)
    """Interval of the Temporal Schedule that purges expired idempotency keys."""
    trace_retention_hours: float = Field(default=72.0, gt=0)
    """Age after which stored trace spans (every tenant's and system spans) are deleted by that purge."""
    checkpoint_retention_hours: float = Field(default=24.0, gt=0)
    """Hours a submission is final (completed/failed) before that purge prunes its checkpoint threads to the last
    checkpoint."""
    checkpoint_delete_after_hours: float = Field(default=30 * 24.0, gt=0)
    """Hours a submission is final before that purge deletes its checkpoint threads (more than the retention)."""
    external_event_give_up_seconds: float = Field(default=900.0, gt=0)
    """Seconds after its publication an external event whose signal keeps failing (Temporal unreachable) is
    dead-lettered instead of retried."""
    backup_dir: Path | None = None
    """Folder of database backups (``gradeflow backup``, the nightly schedule). Unset: ``<data_dir>/backups``."""
    backup_time: str = "02:30"
    """UTC time of day (``HH:MM``) of the nightly backup (a Temporal Schedule kept by the orchestration worker)."""
    backup_retention_days: float = Field(default=30.0, gt=0)
    """Backups older than this are deleted after each nightly backup (the newest verified one is always kept)."""
    backup_schedule_enabled: bool = True
    """Keep the nightly backup schedule (its worker needs ``pg_dump``/``pg_restore`` and the admin URL)."""
    pg_bin_dir: Path | None = None
    """Folder of ``pg_dump``/``pg_restore``. Unset: the embedded PostgreSQL's binaries if installed, else ``PATH``."""
    rate_limit_submit: str = "60/minute"
    """Token bucket per tenant for POST/PUT/PATCH/DELETE (``limits`` notation: N/second|minute|hour)."""
    rate_limit_read: str = "600/minute"
    """Token bucket per tenant for GET and other reads."""
    rate_limit_websocket: str = "30/minute"
    """Token bucket per tenant for WebSocket connects."""
    slow_query_ms: float = Field(default=250.0, gt=0)
    """List queries slower than this are logged with their trace id and counted."""
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    """TTL of hot copies in Redis."""
    rubric_cache_ttl_seconds: float = Field(default=300.0, gt=0)
    """Safety-net lifetime of a worker's in-process copy of an exam's rubrics (broadcasts drop it sooner)."""
    rubric_cache_max_entries: int = Field(default=1024, ge=1)
    """Exams a worker keeps in its in-process rubric cache (least recently used dropped first)."""
    slow_span_ms: float = Field(default=1000.0, gt=0)
    """HTTP requests and other spans slower than this raise a slow-span alert (other kinds: next setting)."""
    slow_span_ms_by_kind: dict[str, float] = Field(default_factory=dict)
    """JSON ms per span kind over the built-ins (node 10000, activity/workflow 120000, websocket 0 = never)."""
    trace_store_postgres: bool = True
    """Store spans in PostgreSQL trace_spans (read by GET /v1/traces/{id}); OTEL_EXPORTER_OTLP_ENDPOINT adds OTLP."""
    min_free_disk_mb: float = Field(default=512.0, ge=0)
    """Readiness reports the data folder's disk as low (degraded) below this many free MiB."""
    log_level: str = "INFO"
    """Root log level."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as text, or one JSON object per line (with trace id, tenant and submission id where known)."""

    @field_validator("temporal_address")
    @classmethod
    def _check_temporal_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:7233")
        return value

    @field_validator("backup_time")
    @classmethod
    def _check_backup_time(cls, value: str) -> str:
        hour, sep, minute = value.partition(":")
        if not sep or not (hour.isdigit() and minute.isdigit() and len(minute) == 2) \
                or not (0 <= int(hour) < 24 and 0 <= int(minute) < 60):
            raise ValueError("must be a UTC time of day HH:MM, e.g. 02:30")
        return f"{int(hour):02d}:{minute}"

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        if self.checkpoint_delete_after_hours <= self.checkpoint_retention_hours:
            raise ValueError("GRADEFLOW_CHECKPOINT_DELETE_AFTER_HOURS must exceed GRADEFLOW_CHECKPOINT_RETENTION_HOURS")
        return self

    @property
    def backup_path(self) -> Path:
        """Where backups go: ``backup_dir``, else ``<data_dir>/backups``."""
        return self.backup_dir or self.data_dir / "backups"

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        if self.env == "prod" and self.jwt_secret.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("GRADEFLOW_JWT_SECRET is a placeholder; set a real secret outside dev")
        if self.env == "prod":
            _check_prod_secrets(self)
            if self.demo_grader_delay_seconds:
                raise ValueError("GRADEFLOW_DEMO_GRADER_DELAY_SECONDS slows grading for demos; "
                                 "it is refused in prod (unset it)")
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("GRADEFLOW_DB_POOL_MIN must not exceed GRADEFLOW_DB_POOL_MAX")
        for name in ("rate_limit_submit", "rate_limit_read", "rate_limit_websocket"):
            _check_rate(name, getattr(self, name))
        return self

    @property
    def trusted_proxy_list(self) -> list[str]:
        """``trusted_proxies`` as a list (empty: proxy headers are ignored)."""
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]

    @property
    def admin_url(self) -> str | None:
        """URL used for migrations (admin URL, else the application URL)."""
        url = self.database_admin_url or self.database_url
        return str(url) if url else None


def _check_prod_secrets(settings: Settings) -> None:
    """Refuse short JWT secrets and the default database password (``GRADEFLOW_ENV=prod`` only)."""
    if len(settings.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ValueError(f"GRADEFLOW_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes in prod "
                         "(e.g. the output of `openssl rand -hex 32`)")
    if settings.app_db_password == DEFAULT_APP_DB_PASSWORD:
        raise ValueError("GRADEFLOW_APP_DB_PASSWORD is the default password; set your own in prod")
    for name in ("database_url", "database_admin_url"):
        url = getattr(settings, name)
        if url is not None and any(host.get("password") == DEFAULT_APP_DB_PASSWORD for host in url.hosts()):
            raise ValueError(f"GRADEFLOW_{name.upper()} uses the default database password; set your own in prod")


def _check_rate(name: str, value: str) -> None:
    from limits import parse

    try:
        parse(value)
    except ValueError as exc:
        raise ValueError(f"GRADEFLOW_{name.upper()} must look like '60/minute', got {value!r}") from exc


@lru_cache
def get_settings() -> Settings:
    """Return the process settings (cached)."""
    return Settings()
