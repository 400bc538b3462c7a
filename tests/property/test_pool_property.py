"""Property 15: connections always return to the pool; its size stays within bounds; an acquire
timeout is a clear error."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.db.pools import PoolManager, PoolTimeoutError

MIN_SIZE, MAX_SIZE = 1, 4


class Boom(Exception):
    """Raised on purpose inside a transaction."""


async def _op(pools: PoolManager, tenant: str, kind: str) -> None:
    if kind == "tx_ok":
        async with pools.transaction(tenant) as conn:
            await conn.execute("SELECT current_setting('app.current_tenant', true)")
    elif kind == "tx_raise":
        with pytest.raises(Boom):
            async with pools.transaction(tenant) as conn:
                await conn.execute("SELECT 1")
                raise Boom
    elif kind == "tx_sql_error":
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with pools.transaction(tenant) as conn:
                await conn.execute("SELECT 1 / 0")
    elif kind == "conn":
        async with pools.connection() as conn:
            await conn.execute("SELECT 1")
    elif kind == "cancel":
        async def slow() -> None:
            async with pools.transaction(tenant) as conn:
                await conn.execute("SELECT pg_sleep(0.5)")

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.02)
        task.cancel()
        # Usually CancelledError; but a task cancelled just as the pool hands it a connection runs
        # to completion (psycopg-pool 3.3 loses that cancellation, psycopg/psycopg#1345). Either
        # way its connection must come back.
        with contextlib.suppress(asyncio.CancelledError):
            await task

async def _settled(pools: PoolManager, timeout: float = 5.0) -> dict[str, int]:
    """Stats once every connection is back (bad ones are replaced in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = pools.stats()
        if stats.get("pool_available", 0) == stats["pool_size"] and stats.get("requests_waiting", 0) == 0:
            return stats
        if loop.time() > deadline:
            return stats
        await asyncio.sleep(0.02)


kinds = st.sampled_from(["tx_ok", "tx_raise", "tx_sql_error", "conn", "cancel"])


@given(batches=st.lists(st.lists(kinds, min_size=1, max_size=8), min_size=1, max_size=4))
async def test_property15_connections_return_and_size_in_bounds(services, tenant_id: str,
                                                                batches: list[list[str]]) -> None:
    pools = PoolManager(services.app_url, None, min_size=MIN_SIZE, max_size=MAX_SIZE, acquire_timeout=10)
    await pools.open()
    try:
        for batch in batches:  # each batch runs concurrently, up to 2x the pool size
            await asyncio.gather(*(_op(pools, tenant_id, kind) for kind in batch))
            assert MIN_SIZE <= pools.stats()["pool_size"] <= MAX_SIZE
        stats = await _settled(pools)
        assert stats.get("pool_available", 0) == stats["pool_size"], stats
        assert stats.get("requests_waiting", 0) == 0, stats
        assert MIN_SIZE <= stats["pool_size"] <= MAX_SIZE, stats
        # And every connection is healthy and tenant-free again.
        async with pools.connection() as conn:
            cur = await conn.execute("SELECT coalesce(current_setting('app.current_tenant', true), '') AS t")
            assert (await cur.fetchone())["t"] == ""
    finally:
        await pools.close()


@settings(max_examples=5)
@given(max_size=st.integers(1, 3), acquire_timeout=st.floats(0.1, 0.4), via=st.sampled_from(["tx", "conn"]))
async def test_property15_acquire_timeout_is_a_clear_error_and_the_pool_recovers(
        services, tenant_id: str, max_size: int, acquire_timeout: float, via: str) -> None:
    pools = PoolManager(services.app_url, None, min_size=1, max_size=max_size, acquire_timeout=acquire_timeout)
    await pools.open()
    try:
        held = asyncio.Semaphore(0)
        release = asyncio.Event()

        async def hold() -> None:
            async with pools.transaction(tenant_id) as conn:
                await conn.execute("SELECT 1")
                held.release()
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(max_size)]
        for _ in range(max_size):  # every connection of the pool is now taken
            await asyncio.wait_for(held.acquire(), 10)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PoolTimeoutError, match=f"no database connection free within {acquire_timeout:g}s"):
            if via == "tx":
                async with pools.transaction(tenant_id):
                    pass
            else:
                async with pools.connection():
                    pass
        elapsed = loop.time() - started
        assert acquire_timeout * 0.8 <= elapsed < acquire_timeout + 1.5, elapsed
        assert MIN_SIZE <= pools.stats()["pool_size"] <= max_size
        release.set()
        await asyncio.gather(*holders)
        stats = await _settled(pools)
        assert stats.get("pool_available", 0) == stats["pool_size"] <= max_size, stats
        async with pools.transaction(tenant_id) as conn:  # usable again
            await conn.execute("SELECT 1")
    finally:
        await pools.close()
