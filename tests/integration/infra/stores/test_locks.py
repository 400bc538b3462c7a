"""RedisLock against real Redis: property 22 and ownership-safe release."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.cache.keys import lock_key
from infra.db.pools import PoolManager
from infra.stores.locks import LockAcquireError, LockNotOwnedError, RedisLock


@given(tasks=st.integers(min_value=2, max_value=8), rounds=st.integers(min_value=1, max_value=3),
       hold_ms=st.integers(min_value=0, max_value=15))
async def test_property22_at_most_one_holder(pools: PoolManager, tasks: int, rounds: int, hold_ms: int) -> None:
    name = f"p22-{uuid.uuid4().hex}"
    holders = 0
    max_holders = 0
    entries = 0

    async def worker(i: int) -> None:
        nonlocal holders, max_holders, entries
        for _ in range(rounds):
            async with RedisLock(pools.redis, name, ttl=2.0, owner=f"w{i}", acquire_timeout=20,
                                 retry_interval=0.005):
                holders += 1
                entries += 1
                max_holders = max(max_holders, holders)
                await asyncio.sleep(hold_ms / 1000)
                assert holders == 1
                holders -= 1

    await asyncio.gather(*(worker(i) for i in range(tasks)))
    assert max_holders == 1
    assert entries == tasks * rounds
    assert await pools.redis.exists(lock_key(name)) == 0


async def test_release_after_expiry_does_not_delete_new_owners_lock(pools: PoolManager) -> None:
    name = f"expiry-{uuid.uuid4().hex}"
    first = RedisLock(pools.redis, name, ttl=0.2, owner="first")
    second = RedisLock(pools.redis, name, ttl=5, owner="second")
    assert await first.acquire()
    assert not await second.acquire()
    await asyncio.sleep(0.35)  # first's TTL runs out without renewal
    assert await second.acquire()
    with pytest.raises(LockNotOwnedError, match="no longer owned"):
        await first.release()
    with pytest.raises(LockNotOwnedError):
        await first.renew()
    with pytest.raises(LockNotOwnedError):
        await first.extend(1)
    assert await pools.redis.get(lock_key(name)) == second.token
    assert await second.owned() and not await first.owned()
    await second.release()
    assert await pools.redis.exists(lock_key(name)) == 0


async def test_context_manager_renews_past_ttl(pools: PoolManager) -> None:
    name = f"renew-{uuid.uuid4().hex}"
    async with RedisLock(pools.redis, name, ttl=0.3) as held:
        await asyncio.sleep(1.0)  # > 3 TTLs: only renewal keeps it
        assert await held.owned()
        assert not held.lost.is_set()
        rival = RedisLock(pools.redis, name, ttl=1)
        assert not await rival.acquire()
    assert await pools.redis.exists(lock_key(name)) == 0


async def test_lost_lock_is_reported_on_exit(pools: PoolManager) -> None:
    name = f"lost-{uuid.uuid4().hex}"
    with pytest.raises(LockNotOwnedError):
        async with RedisLock(pools.redis, name, ttl=0.3) as held:
            await pools.redis.set(lock_key(name), "intruder")  # stolen (e.g. after a long pause)
            async with asyncio.timeout(2):
                await held.lost.wait()
    assert await pools.redis.get(lock_key(name)) == "intruder"
    await pools.redis.delete(lock_key(name))


async def test_extend_and_renew_set_the_ttl(pools: PoolManager) -> None:
    lock = RedisLock(pools.redis, f"ttl-{uuid.uuid4().hex}", ttl=1.0)
    assert await lock.acquire()
    assert 0 < await pools.redis.pttl(lock.key) <= 1000
    await lock.extend(5)
    assert 5000 < await pools.redis.pttl(lock.key) <= 6000
    await lock.renew()
    assert 0 < await pools.redis.pttl(lock.key) <= 1000
    await lock.release()


async def test_blocking_acquire_times_out(pools: PoolManager) -> None:
    name = f"timeout-{uuid.uuid4().hex}"
    holder = RedisLock(pools.redis, name, ttl=5)
    assert await holder.acquire()
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = RedisLock(pools.redis, name, ttl=5, acquire_timeout=0.3)
    with pytest.raises(LockAcquireError):
        async with waiter:
            pass
    assert 0.2 < loop.time() - started < 2
    await holder.release()
