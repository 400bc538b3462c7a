"""Liveness and readiness.

Readiness runs a PostgreSQL query, a Redis ping and a Temporal health call, and reads the free space of
the data folder's disk (``GRADEFLOW_MIN_FREE_DISK_MB``); it is unauthenticated and
never rate limited, so its result is cached for :data:`READY_CACHE_SECONDS` and at most one check runs
at a time (concurrent callers share it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from api.deps import PoolsDep, TemporalDep
from api.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from api.schemas import HealthOut, ReadyOut
from infra.observability.metrics import disk_usage

if TYPE_CHECKING:  # temporalio is imported lazily at run time
    from temporalio.client import Client

router = APIRouter(prefix="/v1/health", tags=["health"])

TEMPORAL_CHECK_TIMEOUT = 2.0
READY_CACHE_SECONDS = 1.0
"""How long one readiness result is served before the dependencies are checked again."""


class ReadinessCache:
    """The latest readiness result, reused for ``ttl`` seconds; one check in flight at a time.

    Args:
        ttl: seconds a result is served after its check finished.

    Attributes:
        checks: checks run so far (for tests and metrics).

    """

    def __init__(self, ttl: float = READY_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self.checks = 0
        self._result: tuple[float, tuple[Any, ...], Any] | None = None
        self._running: tuple[tuple[Any, ...], asyncio.Future[Any]] | None = None

    async def get(self, key: tuple[Any, ...], check: Callable[[], Awaitable[Any]]) -> Any:
        """The cached result for ``key`` (the dependencies checked), else the result of one ``check()``."""
        if self._result is not None:
            at, cached_key, value = self._result
            if cached_key == key and time.monotonic() - at < self.ttl:
                return value
        if self._running is None or self._running[0] != key:
            self.checks += 1
            task = asyncio.ensure_future(check())
            self._running = (key, task)

            def done(finished: asyncio.Future[Any]) -> None:
                if self._running is not None and self._running[1] is finished:
                    self._running = None
                if not finished.cancelled() and finished.exception() is None:
                    self._result = (time.monotonic(), key, finished.result())

            task.add_done_callback(done)
        return await asyncio.shield(self._running[1])  # a caller that goes away leaves the check running


@router.get("", response_model=HealthOut)
async def health() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def _temporal_check(temporal: Client | None) -> str:
    if temporal is None:
        return "error: not connected"
    try:
        ok = await asyncio.wait_for(temporal.service_client.check_health(), TEMPORAL_CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"
    return "ok" if ok else "error: not serving"


def disk_check(settings: Any) -> str:
    """``ok`` while the data folder's file system has ``min_free_disk_mb`` free, else ``low: ...``."""
    if settings is None:
        return "ok"
    usage = disk_usage(Path(settings.data_dir))
    if usage is None:
        return "error: cannot read the data folder's disk"
    free_mb = usage.free / 2**20
    if free_mb < settings.min_free_disk_mb:
        return f"low: {free_mb:.0f} MiB free, below {settings.min_free_disk_mb:g} MiB"
    return "ok"


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def ready(pools: PoolsDep, temporal: TemporalDep, response: Response, request: Request) -> dict:
    """Readiness: 503 (with ``Retry-After``) when PostgreSQL is down; ``degraded`` when Redis or Temporal is.

    The data folder's disk with less than ``GRADEFLOW_MIN_FREE_DISK_MB`` free is ``degraded`` too.
    With Redis down reads fall back to PostgreSQL; with Temporal down submissions are still accepted
    and the outbox reconciler starts their workflows later.
    """
    state = request.app.state
    if getattr(state, "readiness", None) is None:
        state.readiness = ReadinessCache()

    async def check() -> tuple[dict[str, str], str]:
        database_and_redis, temporal_state = await asyncio.gather(pools.health(), _temporal_check(temporal))
        return database_and_redis, temporal_state

    checks, temporal_state = await state.readiness.get((id(pools), id(temporal)), check)
    limiter = getattr(state, "rate_limiter", None)
    checks = {**checks, "temporal": temporal_state, "disk": disk_check(getattr(state, "settings", None))}
    if limiter is None or limiter.degraded:  # listed only while Redis-backed limits are not in force
        checks["rate_limiter"] = "degraded: in-process fallback"
    if checks["database"] != "ok":
        response.status_code = 503
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
        return {"status": "unavailable", "checks": checks}
    return {"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks}
