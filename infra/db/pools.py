"""The per-process pool manager: one psycopg pool and one Redis pool, passed explicitly.

``transaction(tenant_id)`` is the single way application code reaches PostgreSQL: it borrows a
connection, opens a transaction and sets ``app.current_tenant`` for row-level security with
``set_config(..., is_local => true)`` (the parameterised form of ``SET LOCAL``).

Every connection is checked as it is handed out (psycopg_pool's ``check``): one the server killed
while it sat idle (a restart, an idle-session kill) is discarded and replaced, never given to a
caller. A failed check means the server probably dropped every idle connection at once, so it also
starts one sweep of the whole pool (``AsyncConnectionPool.check``) rather than letting each caller
draw, and back off from, the dead ones one by one.

While open, both pools report to the ``pool_connections_*{pool_type,instance}`` gauges
(:data:`infra.observability.metrics.POOLS`, read when scraped; ``instance`` is the manager's name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from infra.observability.metrics import POOLS, psycopg_pool_sample, redis_pool_sample

logger = logging.getLogger(__name__)

SET_TENANT_SQL = "SELECT set_config('app.current_tenant', %s, true)"
HEALTH_SQL = "SELECT 1"


class PoolTimeoutError(RuntimeError):
    """No pooled connection became free within the acquire timeout (the API answers 503)."""


class DatabaseUnavailableError(PoolTimeoutError):
    """No connection within the acquire timeout because connecting to PostgreSQL fails (API: 503)."""


class PoolClosedError(RuntimeError):
    """The pool manager is not open (before start-up or after shutdown)."""


class PoolManager:
    """Owns this process's PostgreSQL and Redis pools.

    Args:
        database_url: URL of the RLS-bound application role.
        redis_url: Redis URL (``None``: no Redis, e.g. for the migration command).
        min_size: connections kept open.
        max_size: upper bound of open connections.
        acquire_timeout: seconds to wait for a free connection before :class:`PoolTimeoutError`.
        redis_max_connections: Redis pool bound.
        name: label used in logs and connection ``application_name``.

    """

    def __init__(self, database_url: str, redis_url: str | None, *, min_size: int = 2, max_size: int = 10,
                 acquire_timeout: float = 5.0, redis_max_connections: int = 50,
                 name: str = "gradeflow") -> None:
        self.acquire_timeout = acquire_timeout
        # Rows come back as dicts (``row_factory`` below); the annotation tells the type checker so.
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            database_url, min_size=min_size, max_size=max_size, timeout=acquire_timeout, open=False,
            name=name, kwargs={"application_name": name, "row_factory": dict_row}, check=self._check,
        )
        self._sweep: asyncio.Task[None] | None = None
        self._connect_errors_seen = 0
        """psycopg_pool's ``connections_errors`` at the last successful checkout."""
        self._redis: aioredis.Redis | None = None
        if redis_url:
            self._redis = aioredis.Redis.from_url(
                redis_url, max_connections=redis_max_connections, decode_responses=True,
                health_check_interval=30, socket_connect_timeout=2,
                # One quick retry: redis-py's default (3 retries, up to 10 s backoff) turns an outage
                # into multi-second stalls; callers degrade to PostgreSQL instead.
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
            )
        self._open = False
        self._untrack: list[Any] = []

    @classmethod
    def from_settings(cls, settings: Any, *, name: str = "gradeflow") -> PoolManager:
        """Build a manager from :class:`infra.settings.Settings`."""
        return cls(
            str(settings.database_url), str(settings.redis_url) if settings.redis_url else None,
            min_size=settings.db_pool_min, max_size=settings.db_pool_max,
            acquire_timeout=settings.db_acquire_timeout,
            redis_max_connections=settings.redis_max_connections, name=name,
        )

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]:
        """The underlying psycopg pool (for stats and tests)."""
        return self._pool

    @property
    def redis(self) -> aioredis.Redis:
        """The shared Redis client (its own connection pool)."""
        if self._redis is None:
            raise PoolClosedError("this pool manager was built without a Redis URL")
        return self._redis

    async def open(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        """Open the pools; with ``wait``, fail fast if PostgreSQL is unreachable."""
        await self._pool.open(wait=wait, timeout=timeout)
        self._open = True
        if not self._untrack:
            name = self._pool.name or "gradeflow"
            self._untrack.append(POOLS.track("postgres", name, lambda: psycopg_pool_sample(self._pool)))
            if self._redis is not None:
                redis = self._redis
                self._untrack.append(POOLS.track("redis", name, lambda: redis_pool_sample(redis)))

    async def close(self, timeout: float = 10.0) -> None:
        """Close both pools, waiting at most ``timeout`` seconds for borrowed connections."""
        self._open = False
        while self._untrack:
            self._untrack.pop()()
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweep
        try:
            await asyncio.wait_for(self._pool.close(timeout=timeout), timeout + 1)
        except TimeoutError:
            logger.warning("database pool did not close within %.1fs", timeout)
        if self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> PoolManager:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """Borrow a connection with no tenant set (system work; RLS shows it nothing)."""
        if not self._open:
            raise PoolClosedError("the database pool is closed")
        try:
            async with self._pool.connection() as conn:
                self._connect_errors_seen = self._connect_errors()
                yield conn
        except PoolTimeout as exc:
            raise self._timeout_error() from exc
        except PoolClosed as exc:
            raise PoolClosedError("the database pool is closed") from exc

    def _connect_errors(self) -> int:
        return int(self._pool.get_stats().get("connections_errors", 0))

    def _timeout_error(self) -> PoolTimeoutError:
        """Busy (every connection in use) or unavailable (connecting has failed since the last checkout)."""
        failed = self._connect_errors() - self._connect_errors_seen
        if failed > 0:
            return DatabaseUnavailableError(
                f"no database connection within {self.acquire_timeout:g}s: connecting to PostgreSQL "
                f"failed {failed} time(s) since the last connection was handed out; retry later")
        return PoolTimeoutError(
            f"no database connection free within {self.acquire_timeout:g}s "
            f"(pool max {self._pool.max_size}); raise GRADEFLOW_DB_POOL_MAX or retry later")

    async def _check(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        """psycopg_pool's ``check``: a quick round trip; a failure also sweeps the idle connections."""
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self._open and (self._sweep is None or self._sweep.done()):
                self._sweep = asyncio.create_task(self._sweep_idle(), name=f"{self._pool.name}-sweep")
            raise

    async def _sweep_idle(self) -> None:
        """Check every idle connection now; the dead ones are replaced in the background."""
        logger.warning("a pooled database connection was dead; checking the idle ones (pool %s)", self._pool.name)
        try:
            await self._pool.check()
        except Exception as exc:  # noqa: BLE001 - best effort: each checkout still checks its connection
            logger.warning("sweeping pool %s failed: %s: %s", self._pool.name, type(exc).__name__, exc)

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """Run one transaction as ``tenant_id``; commit on success, roll back on error."""
        if not tenant_id:
            raise ValueError("tenant_id is required for a tenant transaction")
        async with self.connection() as conn, conn.transaction():
            await conn.execute(SET_TENANT_SQL, (tenant_id,))
            yield conn

    async def health(self) -> dict[str, str]:
        """Check both dependencies; each is ``ok`` or a short error."""
        result = {"database": "ok", "redis": "ok"}
        try:
            async with self.connection() as conn:
                await conn.execute(HEALTH_SQL)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            result["database"] = f"error: {type(exc).__name__}"
        if self._redis is None:
            result["redis"] = "absent"
        else:
            try:
                await self._redis.ping()
            except Exception as exc:  # noqa: BLE001
                result["redis"] = f"error: {type(exc).__name__}"
        return result

    def stats(self) -> dict[str, int]:
        """Psycopg pool statistics (pool_size, pool_available, requests_waiting, ...)."""
        return dict(self._pool.get_stats())
