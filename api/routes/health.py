"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response

from api.deps import PoolsDep, TemporalDep
from api.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from api.schemas import HealthOut, ReadyOut

if TYPE_CHECKING:  # temporalio is imported lazily at run time
    from temporalio.client import Client

router = APIRouter(prefix="/v1/health", tags=["health"])

TEMPORAL_CHECK_TIMEOUT = 2.0


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


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def ready(pools: PoolsDep, temporal: TemporalDep, response: Response, request: Request) -> dict:
    """Readiness: 503 (with ``Retry-After``) when PostgreSQL is down; ``degraded`` when Redis or Temporal is.

    With Redis down reads fall back to PostgreSQL; with Temporal down submissions are still accepted
    and the outbox reconciler starts their workflows later.
    """
    checks, temporal_state = await asyncio.gather(pools.health(), _temporal_check(temporal))
    limiter = getattr(request.app.state, "rate_limiter", None)
    checks = {**checks, "temporal": temporal_state}
    if limiter is None or limiter.degraded:  # listed only while Redis-backed limits are not in force
        checks["rate_limiter"] = "degraded: in-process fallback"
    if checks["database"] != "ok":
        response.status_code = 503
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
        return {"status": "unavailable", "checks": checks}
    return {"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks}
