"""The FastAPI application and its uvicorn entry point.

:func:`create_app` builds the app (pools and the Temporal client open in its ``lifespan``);
:func:`serve` runs it with uvicorn and is what ``gradeflow api`` calls.

``app.state`` holds ``settings``, ``pools``, ``cache`` and ``temporal``. With Temporal unreachable at
start-up the API still starts (``temporal`` is ``None``): submissions are stored and the outbox
reconciler starts their workflows later; readiness reports the outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from api.access_log import install_token_redaction
from api.docs import install_docs
from api.errors import BodySizeLimitMiddleware, install_error_handlers
from api.middleware.idempotency import IdempotencyMiddleware
from api.middleware.ratelimit import RateLimitMiddleware
from api.middleware.telemetry import TelemetryMiddleware
from api.openapi import install_openapi
from api.routes import api_router
from api.ui import install_ui
from infra.cache.copies import Cache
from infra.db.pools import PoolManager
from infra.events.hub import FeedHub
from infra.observability.metrics import DISK
from infra.observability.tracing import setup_tracing, with_tracing
from infra.security.ratelimit import RateLimiter
from infra.settings import Settings, get_settings

logger = logging.getLogger(__name__)

TEMPORAL_CONNECT_ATTEMPTS = 5
"""First-connect attempts (the dev server opens its port a little before it answers)."""
TEMPORAL_CONNECT_DELAY = 0.5
"""Seconds before the first retry; doubled after each failure."""
TEMPORAL_CONNECT_TIMEOUT = 5.0
"""Seconds one connect attempt may take."""


async def connect_temporal(settings: Settings, *, attempts: int = TEMPORAL_CONNECT_ATTEMPTS,
                           delay: float = TEMPORAL_CONNECT_DELAY) -> Any | None:
    """Connect a Temporal client, retrying a few times; ``None`` (logged) when it stays unreachable.

    Args:
        settings: supplies ``temporal_address`` and ``temporal_namespace``.
        attempts: connect attempts.
        delay: first back-off, doubled after each failure.

    """
    from temporalio.client import Client

    if not settings.temporal_address:
        logger.warning("GRADEFLOW_TEMPORAL_ADDRESS is not set; starting without Temporal")
        return None
    for attempt in range(1, attempts + 1):
        try:
            return await asyncio.wait_for(
                Client.connect(settings.temporal_address, namespace=settings.temporal_namespace),
                TEMPORAL_CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - retried, then reported
            logger.warning("temporal connect %d/%d to %s failed: %s", attempt, attempts,
                           settings.temporal_address, exc)
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay *= 2
    return None


API_DESCRIPTION = (
    "Durable AI grading. Authenticate with `Authorization: Bearer <JWT>` (claims `sub`, `tenant`, `roles`, "
    "`exp`); every request only sees its token's tenant. Writes accept an `Idempotency-Key` header. "
    "Requests are rate limited per tenant and route class (`RateLimit-*` headers; 429 with `Retry-After`). "
    "Every error is `application/problem+json` (RFC 9457)."
)


UNTRACED_PATHS = frozenset({"/metrics", "/v1/health", "/v1/health/ready"})
"""Scrapes and probes: frequent, uninteresting, never worth a span."""
TELEMETRY: TelemetryConfig = {
    "tracing": True,  # the one HTTP instrumentation: its span is the request's (one trace per request)
    "operation_spans": False,  # no extra span per dependency, endpoint and serialization
    "metrics": False,  # Prometheus metrics come from api.middleware.telemetry
    "logs": False,  # errors are logged by the app's own handlers
    "exclude": lambda scope: scope.get("path") in UNTRACED_PATHS,
}
"""FastAPI's native OpenTelemetry settings (spans go to the provider :func:`setup_tracing` installs)."""


async def _ensure_schedules(temporal: Any, settings: Settings) -> None:
    """Create or update the hourly idempotency-key purge schedule (best effort: logged on failure)."""
    if temporal is None:
        return
    from datetime import timedelta

    from infra.temporal.schedules import ensure_purge_schedule

    try:
        await ensure_purge_schedule(
            temporal, every=timedelta(minutes=settings.idempotency_purge_interval_minutes))
    except Exception as exc:  # noqa: BLE001 - the API serves without it; the next start retries
        logger.warning("could not ensure the idempotency purge schedule: %s", exc)


def create_app(settings: Settings | None = None, *, temporal_client: Any = None,
               grading_options: dict[str, Any] | None = None) -> FastAPI:
    """Build the API.

    Args:
        settings: process settings (default: :func:`infra.settings.get_settings`).
        temporal_client: an already connected Temporal client to use instead of connecting one.
        grading_options: extra keyword arguments for :func:`infra.temporal.starter.start_grading`
            (tests pass their own ``task_queue`` / ``cognitive_queue``).

    Returns:
        The FastAPI app; pools and clients open in its lifespan, never at import.

    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pools = PoolManager.from_settings(settings, name="gradeflow-api")
        await pools.open()
        try:
            app.state.settings = settings
            app.state.pools = pools
            app.state.cache = Cache(pools.redis, ttl_seconds=settings.cache_ttl_seconds)
            setup_tracing(settings, "gradeflow-api", pools)
            DISK.path = Path(settings.data_dir)  # gradeflow_data_dir_free_bytes, read when scraped
            app.state.temporal = temporal_client or with_tracing(await connect_temporal(settings))
            app.state.rate_limiter = RateLimiter.from_settings(settings, pools.redis)
            app.state.feed_hub = FeedHub(pools.redis, max_feeds_per_tenant=settings.ws_max_feeds_per_tenant)
            install_token_redaction()
            await _ensure_schedules(app.state.temporal, settings)
            warm_routes(app)
            yield
        finally:
            hub = getattr(app.state, "feed_hub", None)
            if hub is not None:
                await hub.close()
            await pools.close(timeout=settings.shutdown_timeout)

    app = FastAPI(
        title="gradeflow", version="0.1.0", lifespan=lifespan,
        description=API_DESCRIPTION,
        # No trailing-slash redirects: their Location is built from the Host header, which clients control.
        redirect_slashes=False,
        telemetry=TELEMETRY,
        docs_url=None, redoc_url=None,  # served by install_docs with local assets (api.docs)
    )
    app.state.settings = settings
    app.state.grading_options = dict(grading_options or {})
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware, ttl_hours=settings.idempotency_ttl_hours,
                       lease_seconds=settings.idempotency_lease_seconds)
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(RateLimitMiddleware)
    app.add_middleware(TelemetryMiddleware)  # outermost of ours: measures what the others refuse too
    app.include_router(api_router)
    install_openapi(app)
    install_docs(app)
    install_ui(app)  # /ui, / -> /ui and, outside prod, POST /v1/dev/token
    return app


def uvicorn_config(app: Any, settings: Settings, *, host: str | None = None, port: int | None = None) -> Any:
    """The uvicorn configuration of ``gradeflow api``.

    Proxy headers (``X-Forwarded-For``/``-Proto``) are believed only from ``GRADEFLOW_TRUSTED_PROXIES``;
    with none configured the client address is the peer's, so nobody can pick the address that
    anonymous rate limits are keyed on.
    """
    import uvicorn

    trusted = settings.trusted_proxy_list
    # JSON logs: uvicorn configures no handlers of its own; its records reach the root's JSON handler.
    logging_config: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    return uvicorn.Config(app, host=host or settings.api_host, port=settings.api_port if port is None else port,
                          log_level=settings.log_level.lower(), proxy_headers=bool(trusted),
                          forwarded_allow_ips=",".join(trusted) if trusted else "", ws="websockets-sansio",
                          **logging_config)


def warm_routes(app: FastAPI) -> int:
    """Build every route's matching state now, not on the first request that reaches it.

    FastAPI (0.16x) builds the routes of an included router the first time a request is matched
    through it: about 20 ms of CPU on the event loop, paid by the first submission after start
    (issue 13). Best effort: a FastAPI without ``iter_route_contexts`` is left to do it lazily.

    Returns:
        The number of routes walked (0 when skipped).

    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - other FastAPI versions
        return 0
    return sum(1 for _ in iter_route_contexts(app.routes))


def serve(settings: Settings | None = None) -> None:
    """Run the API with uvicorn on ``settings.api_host:api_port`` until interrupted."""
    import uvicorn

    settings = settings or get_settings()
    config = uvicorn_config(create_app(settings), settings)
    install_token_redaction()  # uvicorn configured its loggers just now
    uvicorn.Server(config).run()
