"""A small FastAPI app wired with the auth dependency and both middlewares (no Temporal).

Lets the middleware contract be tested on its own, independent of the real routes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.auth import PrincipalDep, require_roles
from api.middleware.idempotency import IdempotencyMiddleware
from api.middleware.problem import problem_response
from api.middleware.ratelimit import RateLimitMiddleware
from infra.security.ratelimit import RateLimiter
from infra.security.tokens import mint_token


def build_app(settings: Any, pools: Any, limiter: RateLimiter | None, calls: list[dict]) -> FastAPI:
    """Mini app: ``POST /v1/things`` records calls; ``body.sleep`` and ``body.status`` steer it."""
    app = FastAPI()
    app.state.settings = settings
    app.state.pools = pools
    app.state.rate_limiter = limiter

    async def http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        return problem_response(exc.status_code, str(exc.detail), slug="http", instance=request.url.path,
                                headers=exc.headers)

    app.add_exception_handler(HTTPException, http_error)

    @app.post("/v1/things", status_code=201)
    async def create(body: dict, principal: PrincipalDep) -> Any:
        calls.append(body)
        await asyncio.sleep(float(body.get("sleep", 0)))
        status = int(body.get("status", 201))
        return JSONResponse({"id": str(uuid.uuid4()), "n": len(calls), "tenant": principal.tenant_id},
                            status_code=status, headers={"Location": "/v1/things/x"})

    @app.get("/v1/things")
    async def read(principal: PrincipalDep) -> dict:
        return {"tenant": principal.tenant_id}

    @app.get("/v1/admin", dependencies=[Depends(require_roles("admin"))])
    async def admin() -> dict:
        return {"ok": True}

    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "degraded" if limiter is not None and limiter.degraded else "ok"}

    app.add_middleware(IdempotencyMiddleware, ttl_hours=settings.idempotency_ttl_hours,
                       lease_seconds=settings.idempotency_lease_seconds)
    app.add_middleware(RateLimitMiddleware)
    return app


def bearer(settings: Any, tenant: str, *roles: str, sub: str = "caller-1", ttl: int = 600) -> dict[str, str]:
    """Authorization header for a fresh token."""
    token = mint_token(settings, tenant=tenant, roles=roles or ("submitter",), sub=sub, ttl_seconds=ttl)
    return {"Authorization": f"Bearer {token}"}


def ensure_tenant(admin_url: str, tenant: str) -> None:
    """Create the tenant row (idempotency keys reference it)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (tenant, tenant))
