"""PoolManager against real PostgreSQL: acquire timeout, health, tenant scoping."""

from __future__ import annotations

import asyncio
import time

import pytest

from infra.db.pools import PoolClosedError, PoolManager, PoolTimeoutError


async def test_acquire_past_timeout_raises_promptly(services) -> None:
    pools = PoolManager(services.app_url, None, min_size=1, max_size=1, acquire_timeout=0.3)
    await pools.open()
    try:
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with pools.connection():
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError, match="no database connection free within 0.3s"):
            async with pools.transaction("t-timeout"):
                pass
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 2.0, elapsed
        release.set()
        await holder
        # The pool recovers: the connection is back and usable.
        async with pools.transaction("t-timeout") as conn:
            await conn.execute("SELECT 1")
        stats = pools.stats()
        assert stats["pool_available"] == stats["pool_size"] == 1
    finally:
        await pools.close()


async def test_health_reports_both_dependencies(pools: PoolManager) -> None:
    assert await pools.health() == {"database": "ok", "redis": "ok"}


async def test_closed_pool_refuses(services) -> None:
    pools = PoolManager(services.app_url, None, min_size=1, max_size=1)
    with pytest.raises(PoolClosedError):
        async with pools.connection():
            pass
    assert (await pools.health())["redis"] == "absent"


async def test_tenant_setting_is_transaction_local(pools: PoolManager, tenant_id: str) -> None:
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT current_setting('app.current_tenant', true) AS t")
        assert (await cur.fetchone())["t"] == tenant_id
    async with pools.connection() as conn:
        cur = await conn.execute("SELECT coalesce(current_setting('app.current_tenant', true), '') AS t")
        assert (await cur.fetchone())["t"] == ""
    with pytest.raises(ValueError):
        async with pools.transaction(""):
            pass
