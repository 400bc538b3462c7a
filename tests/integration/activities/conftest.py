"""Fixtures of the activity tests (the grading ones are defined in harness so property tests can import them)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from infra.db.pools import PoolManager
from tests.integration.workflows.harness import gf_settings, saver  # noqa: F401


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but never listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
async def redis_down_pools(pg_url, dead_port) -> AsyncIterator[PoolManager]:
    """Pools on the real PostgreSQL and a Redis that refuses every connection."""
    pools = PoolManager(pg_url, f"redis://127.0.0.1:{dead_port}/0", min_size=1, max_size=4)
    await pools.open()
    try:
        yield pools
    finally:
        await pools.close()
