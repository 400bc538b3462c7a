"""Fixtures of the API-contract tests: the real app on uvicorn with generous limits, and tokens.

Import the fixtures you use (``from tests.integration.api_contract.fixtures import ...``);
property tests under ``tests/property`` share them this way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server

Bearer = Callable[..., dict[str, str]]
GENEROUS = "100000/minute"


@pytest.fixture
def contract_settings(app_settings):
    """Test settings with limits high enough never to interfere (rate-limit tests set their own)."""
    return app_settings.model_copy(update={"rate_limit_submit": GENEROUS, "rate_limit_read": GENEROUS,
                                           "rate_limit_websocket": GENEROUS})


async def serve_app(settings: Any, temporal_client: Any, task_queue: str) -> Any:
    """Context manager: the real app (real lifespan) on a free port; yields the base URL."""
    from api.app import create_app

    app = create_app(settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
    return running_server(app)


@pytest.fixture
async def contract_url(contract_settings, temporal_client, task_queue) -> AsyncIterator[str]:
    """Base URL of the real API."""
    async with await serve_app(contract_settings, temporal_client, task_queue) as url:
        yield url


@pytest.fixture
async def api(contract_url) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client of the real API."""
    async with httpx.AsyncClient(base_url=contract_url, timeout=60) as http:
        yield http


@pytest.fixture
def bearer(app_settings) -> Bearer:
    """Factory: ``bearer(tenant, roles=..., sub=...)`` -> an ``Authorization`` header."""
    from infra.tokens import ROLES, mint_token

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
