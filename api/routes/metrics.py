"""``GET /metrics``: this API process's Prometheus metrics (text exposition format).

Unauthenticated and never rate limited, like the health routes, so Prometheus can scrape it; it
shows counts and latencies, no tenant data (labels are route templates, statuses, kinds and pool
names). Keep it off the public internet (the ingress should not route ``/metrics``), as usual.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Every metric of this process."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
