"""Fixtures of the API tests: ``auth_headers`` (the ONE place tests get credentials), a real server.

``auth_headers(tenant_id, roles=("admin",)) -> dict`` returns the headers that authenticate as a
tenant: a bearer token signed with the test settings' secret.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.api.server import serve_app

AuthHeaders = Callable[..., dict[str, str]]


@pytest.fixture
def auth_headers(app_settings) -> AuthHeaders:
    """Factory: ``auth_headers(tenant_id)`` -> headers acting as that tenant (``admin`` unless ``roles``)."""
    from infra.security.tokens import mint_token

    def make(tenant_id: str, roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(app_settings, tenant=tenant_id, roles=roles)}"}

    return make


@pytest.fixture
async def api_url(app_settings, temporal_client, task_queue) -> AsyncIterator[str]:
    """Base URL of a real uvicorn server running the API (real lifespan, real services)."""
    async with serve_app(app_settings, temporal_client, task_queue) as url:
        yield url


@pytest.fixture
async def client(api_url) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP client bound to :func:`api_url`."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        yield http


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 with nothing listening (a service that is down).

    The port stays bound (not listening) for the whole test, so connections are refused and no
    other server of the test (e.g. uvicorn picking a free port) can take it over.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def question(qid: str, qtype: str = "choice", **extra: Any) -> dict[str, Any]:
    """A valid question of each type."""
    rubrics = {
        "choice": {"options": ["a", "b", "c"], "correct": ["b"]},
        "numeric": {"value": 42, "abs_tol": 0.5},
        "short_answer": {"criteria": [{"id": "c1", "description": "mentions photosynthesis", "points": 2,
                                       "keywords": ["photosynthesis"]}]},
        "essay": {"criteria": [{"id": "e1", "description": "thesis", "points": 3, "keywords": ["because"]},
                               {"id": "e2", "description": "example", "points": 2, "keywords": ["example"]}]},
    }
    points = {"choice": 1, "numeric": 2, "short_answer": 2, "essay": 5}[qtype]
    return {"id": qid, "type": qtype, "prompt": f"Prompt {qid}", "max_points": points,
            "rubric": rubrics[qtype], **extra}


def exam_body(title: str = "Biology") -> dict[str, Any]:
    """An exam with one question of every type."""
    return {"title": title, "questions": [question("q1", "choice"), question("q2", "numeric"),
                                          question("q3", "short_answer"), question("q4", "essay")]}


GOOD_ANSWERS = {"q1": "b", "q2": 42, "q3": "Plants use photosynthesis.", "q4": "Because, for example."}


@pytest.fixture
def count_rows(pg_admin_url) -> Callable[[str], Any]:
    """``await count_rows(tenant_id)`` -> row counts of every table the API writes, for one tenant."""

    async def count(tenant_id: str) -> dict[str, int]:
        tables = ["exams", "questions", "rubric_versions", "submissions", "answers", "event_outbox"]
        async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
            out = {}
            for table in tables:
                cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant_id,))
                out[table] = (await cur.fetchone())[0]
            return out

    return count


@pytest.fixture
def new_tenant() -> Callable[[], str]:
    """Factory of fresh tenant ids."""
    return lambda: f"t-{uuid.uuid4().hex[:12]}"
