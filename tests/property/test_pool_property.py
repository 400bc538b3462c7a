"""Property 15: connections always return to the pool; its size stays within bounds."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.pools import PoolManager

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
