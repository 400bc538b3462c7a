"""Session-wide real services for every test: PostgreSQL, Redis and Temporal.

By default the session starts the embedded stack on free ports in a temp folder. When
``GRADEFLOW_DATABASE_URL``, ``GRADEFLOW_REDIS_URL`` and ``GRADEFLOW_TEMPORAL_ADDRESS`` are set it
uses those servers instead (``GRADEFLOW_DATABASE_ADMIN_URL`` for migrations, if the app URL is not
privileged). Services are started lazily: unit tests that need none start none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fixtures of the API-contract tests (real app on uvicorn, tokens), shared with the property tests.
pytest_plugins = ["tests.integration.api_contract.fixtures"]

settings.register_profile(
    "ci", max_examples=15, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

APP_PASSWORD = "gradeflow-test-app"
TEST_DATABASE = "gradeflow"


@dataclass(frozen=True)
class Services:
    """Where the session's real services are."""

    admin_url: str
    """Owner/superuser URL (migrations, test set-up)."""
    app_url: str
    """RLS-bound application role URL."""
    redis_url: str
    temporal_address: str
    data_dir: Path | None = None
    temporal_metrics_url: str | None = None
    """The embedded Temporal server's Prometheus endpoint (``None`` with external services)."""

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (CLI, workers) that should use these services."""
        env = dict(os.environ)
        env.update(
            GRADEFLOW_DATABASE_URL=self.app_url,
            GRADEFLOW_DATABASE_ADMIN_URL=self.admin_url,
            GRADEFLOW_REDIS_URL=self.redis_url,
            GRADEFLOW_TEMPORAL_ADDRESS=self.temporal_address,
            GRADEFLOW_APP_DB_PASSWORD=APP_PASSWORD,
            GRADEFLOW_ENV="test",
        )
        return env


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Start (or locate) the real services once per session and migrate the schema."""
    import asyncio

    from infra.db.migrate import app_url_from_admin, migrate
    from infra.stack.devserver import ensure_database

    external = os.environ.get("GRADEFLOW_DATABASE_URL")
    stack = None
    tmp = None
    if external:
        admin = os.environ.get("GRADEFLOW_DATABASE_ADMIN_URL", external)
        redis_url = os.environ["GRADEFLOW_REDIS_URL"]
        temporal = os.environ["GRADEFLOW_TEMPORAL_ADDRESS"]
    else:
        from infra.stack.embedded import EmbeddedStack, free_port

        tmp = Path(tempfile.mkdtemp(prefix="gradeflow-test-"))
        stack = EmbeddedStack(tmp, free_port(), free_port(), free_port(), free_port(), durable=False)
        started = time.monotonic()
        stack.start()
        print(f"\n[gradeflow] embedded stack up in {time.monotonic() - started:.1f}s under {tmp}")
        admin = ensure_database(stack.database_admin_url, TEST_DATABASE)
        redis_url, temporal = stack.redis_url, stack.temporal_address
    asyncio.run(migrate(admin, app_password=APP_PASSWORD, log=lambda line: None))
    app = app_url_from_admin(admin, APP_PASSWORD)
    try:
        yield Services(admin, app, redis_url, temporal, tmp,
                       stack.temporal_metrics_url if stack is not None else None)
    finally:
        if stack is not None:
            stack.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(services: Services) -> str:
    """Application-role URL (RLS applies)."""
    return services.app_url


@pytest.fixture(scope="session")
def pg_admin_url(services: Services) -> str:
    """Owner URL, for test set-up that must see every tenant."""
    return services.admin_url


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture(scope="session")
def temporal_address(services: Services) -> str:
    return services.temporal_address


@pytest.fixture
def app_settings(services: Services, monkeypatch: pytest.MonkeyPatch):
    """``Settings`` pointing at the session's services (environment patched for this test)."""
    from infra.settings import Settings, get_settings

    for key, value in services.env().items():
        if key.startswith("GRADEFLOW_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


@pytest.fixture
async def pools(services: Services) -> AsyncIterator:
    """A fresh :class:`infra.db.pools.PoolManager` on the session's services."""
    from infra.db.pools import PoolManager

    manager = PoolManager(services.app_url, services.redis_url, min_size=1, max_size=5, acquire_timeout=5)
    await manager.open()
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture(scope="session")
async def temporal_client(services: Services):
    """A Temporal client on the session's server."""
    from temporalio.client import Client

    return await Client.connect(services.temporal_address)


@pytest.fixture
def task_queue() -> str:
    """A unique task queue per test, so workers of different tests never share work."""
    return f"test-{uuid.uuid4()}"


@pytest.fixture
def tenant_id() -> str:
    """A fresh tenant id per test."""
    return f"t-{uuid.uuid4().hex[:12]}"
