"""Fixtures of the API-contract tests: the real app on uvicorn with generous limits, and tokens.

Registered for the whole suite as a pytest plugin (``pytest_plugins`` in ``tests/conftest.py``): tests
request the fixtures by name and import only the plain helpers (``create_exam``, ``submission_body``, ...).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import serve_app

Bearer = Callable[..., dict[str, str]]
GENEROUS = "100000/minute"


@pytest.fixture
def contract_settings(app_settings):
    """Test settings with limits high enough never to interfere (rate-limit tests set their own)."""
    return app_settings.model_copy(update={"rate_limit_submit": GENEROUS, "rate_limit_read": GENEROUS,
                                           "rate_limit_websocket": GENEROUS})


@pytest.fixture
async def contract_url(contract_settings, temporal_client, task_queue) -> AsyncIterator[str]:
    """Base URL of the real API."""
    async with serve_app(contract_settings, temporal_client, task_queue) as url:
        yield url


@pytest.fixture
async def api(contract_url) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the real API."""
    async with httpx.AsyncClient(base_url=contract_url, timeout=60) as http:
        yield http


@pytest.fixture
def bearer(app_settings) -> Bearer:
    """Factory: ``bearer(tenant, roles=..., sub=...)`` -> an ``Authorization`` header."""
    from infra.security.tokens import ROLES, mint_token

    def make(tenant: str, roles: tuple[str, ...] = ROLES, sub: str = "caller-1", ttl: int = 3600) -> dict[str, str]:
        token = mint_token(app_settings, tenant=tenant, roles=roles, sub=sub, ttl_seconds=ttl)
        return {"Authorization": f"Bearer {token}"}

    return make


def new_tenant() -> str:
    """A fresh tenant id."""
    return f"t-{uuid.uuid4().hex[:12]}"


async def create_exam(api: httpx.AsyncClient, headers: dict[str, str], title: str = "Biology") -> str:
    """Create an exam through the API; return its id."""
    resp = await api.post("/v1/exams", json=exam_body(title), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def submission_body(exam_id: str, student: str = "s-1", **extra: Any) -> dict[str, Any]:
    """A valid submission body."""
    return {"exam_id": exam_id, "student_id": student, "answers": GOOD_ANSWERS, **extra}


async def run_purge(temporal_client: Any, pools: Any, task_queue: str) -> Any:
    """Run the real purge workflow once, on a worker of its own; return its ``PurgeOutput``."""
    from temporalio.worker import Worker

    from activities.maintenance import MaintenanceActivities
    from workflows.purge import IdempotencyPurgeWorkflow, PurgeInput

    activities = MaintenanceActivities(pools)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[IdempotencyPurgeWorkflow],
                      activities=[activities.purge_expired_idempotency_keys, activities.prune_checkpoints]):
        return await temporal_client.execute_workflow(
            IdempotencyPurgeWorkflow.run, PurgeInput(reason="test"), id=f"purge-{uuid.uuid4()}",
            task_queue=task_queue)
