"""The API builds every route's matching state at start-up (``api.app.warm_routes``), not on first use."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api.app import warm_routes
from api.routes import api_router


def test_warm_routes_walks_every_included_route() -> None:
    app = FastAPI()
    app.include_router(api_router)
    assert warm_routes(app) >= len([r for r in api_router.routes if getattr(r, "methods", None)])


def test_warm_routes_on_nested_routers() -> None:
    inner = APIRouter(prefix="/inner")

    @inner.get("/x")
    async def x() -> dict[str, str]:
        return {}

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner)
    app = FastAPI()
    app.include_router(outer)
    assert warm_routes(app) >= 1
