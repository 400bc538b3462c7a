"""Cache against real Redis and PostgreSQL: properties 5, 6, 7, 8 and degraded reads."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as redis_errors

from infra.cache.copies import Cache, Invalidation, InvalidationListener, write_through
from infra.cache.keys import exam_key
from infra.db.pools import PoolManager

INSERT_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, %s)"
UPDATE_EXAM_SQL = "UPDATE exams SET title = %s WHERE id = %s"
SELECT_EXAM_SQL = "SELECT title FROM exams WHERE id = %s"

titles = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
                 min_size=1, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


async def _new_exam(pools: PoolManager, tenant: str, title: str = "initial") -> str:
    exam_id = str(uuid.uuid4())
    async with pools.transaction(tenant) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant,))
        await conn.execute(INSERT_EXAM_SQL, (exam_id, tenant, title))
    return exam_id


async def _db_title(pools: PoolManager, tenant: str, exam_id: str) -> str | None:
    async with pools.transaction(tenant) as conn:
        row = await (await conn.execute(SELECT_EXAM_SQL, (exam_id,))).fetchone()
    return row["title"] if row else None


async def _update_title(pools: PoolManager, tenant: str, exam_id: str, title: str | None) -> int:
    async with pools.transaction(tenant) as conn:
        cur = await conn.execute(UPDATE_EXAM_SQL, (title, exam_id))
        return cur.rowcount


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@given(new_titles=st.lists(titles, min_size=1, max_size=4))
async def test_property5_write_through_keeps_redis_and_pg_equal(pools: PoolManager, tenant_id: str,
                                                                new_titles: list[str]) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    exam_id = await _new_exam(pools, tenant_id)
    key = exam_key(tenant_id, exam_id)
    for title in new_titles:
        value = {"id": exam_id, "title": title}
        rows = await write_through(cache, key, value, lambda t=title: _update_title(pools, tenant_id, exam_id, t))
        assert rows == 1
        cached = await cache.get_json(key)
        assert cached == value
        assert cached["title"] == await _db_title(pools, tenant_id, exam_id)


@given(prior=json_values, prior_present=st.booleans(), new=json_values)
async def test_property8_failed_db_write_restores_exact_prior_state(
    pools: PoolManager, tenant_id: str, prior: Any, prior_present: bool, new: Any
) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    exam_id = await _new_exam(pools, tenant_id, "before")
    key = exam_key(tenant_id, exam_id)
    if prior_present:
        await pools.redis.set(key, json.dumps(prior), px=50_000)
    before_raw, before_ttl = await pools.redis.get(key), await pools.redis.pttl(key)

    # A real database failure: NOT NULL violation on exams.title.
    with pytest.raises(psycopg.errors.NotNullViolation):
        await write_through(cache, key, {"title": new}, lambda: _update_title(pools, tenant_id, exam_id, None))

    assert await pools.redis.get(key) == before_raw
    after_ttl = await pools.redis.pttl(key)
    if prior_present:
        assert after_ttl > 0 and 0 <= before_ttl - after_ttl < 5_000  # TTL kept, not reset to 60 s
    else:
        assert after_ttl == -2  # key absent, as before
    assert await _db_title(pools, tenant_id, exam_id) == "before"


async def test_property8_prior_without_ttl_stays_persistent(pools: PoolManager, tenant_id: str) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    key = exam_key(tenant_id, "persistent")
    await pools.redis.set(key, '"old"')

    async def failing() -> None:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        await write_through(cache, key, "new", failing)
    assert await pools.redis.get(key) == '"old"'
    assert await pools.redis.pttl(key) == -1


@given(value=json_values.filter(lambda v: v is not None))
async def test_property6_reads_go_redis_first_then_backfill(pools: PoolManager, tenant_id: str,
                                                            value: Any) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    key = exam_key(tenant_id, str(uuid.uuid4()))
    calls = 0

    async def loader() -> Any:
        nonlocal calls
        calls += 1
        return {"from": "db", "value": value}

    # Present only in Redis: served from the cache, the loader is never called.
    await cache.set_json(key, {"only": "redis", "value": value})
    assert await cache.read_through(key, loader) == ({"only": "redis", "value": value}, "cache")
    assert calls == 0

    # Miss: loader called once, value back-filled, next read is a cache hit.
    await cache.delete(key)
    assert await cache.read_through(key, loader) == ({"from": "db", "value": value}, "database")
    assert calls == 1
    assert await cache.get_json(key) == {"from": "db", "value": value}
    assert 0 < await pools.redis.ttl(key) <= 60
    assert await cache.read_through(key, loader) == ({"from": "db", "value": value}, "cache")
    assert calls == 1


async def test_read_through_from_postgres_miss_returns_none_uncached(pools: PoolManager, tenant_id: str) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    exam_id = await _new_exam(pools, tenant_id, "real title")
    key = exam_key(tenant_id, exam_id)
    value, source = await cache.read_through(key, lambda: _db_title(pools, tenant_id, exam_id))
    assert (value, source) == ("real title", "database")
    missing = exam_key(tenant_id, str(uuid.uuid4()))
    nobody = "00000000-0000-0000-0000-000000000000"
    assert await cache.read_through(missing, lambda: _db_title(pools, tenant_id, nobody)) == (None, "database")
    assert await pools.redis.exists(missing) == 0


async def test_degraded_read_when_redis_unreachable(pools: PoolManager, tenant_id: str) -> None:
    # Same client options as PoolManager's Redis (default retries), pointed at a closed port.
    dead = aioredis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=2,
                          decode_responses=True)
    try:
        cache = Cache(dead, ttl_seconds=60, breaker_seconds=30)
        exam_id = await _new_exam(pools, tenant_id, "served anyway")
        key = exam_key(tenant_id, exam_id)
        value, source = await cache.read_through(key, lambda: _db_title(pools, tenant_id, exam_id))
        assert (value, source) == ("served anyway", "database-degraded")
        # The breaker is open: the next reads skip Redis and are fast.
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(5):
            assert await cache.read_through(key, lambda: _db_title(pools, tenant_id, exam_id)) == (
                "served anyway", "database-degraded")
        assert loop.time() - started < 1.0
        # A write-through refuses before touching the database when Redis is down.
        with pytest.raises(redis_errors.ConnectionError):
            await write_through(cache, key, "x", lambda: _update_title(pools, tenant_id, exam_id, "x"))
        assert await _db_title(pools, tenant_id, exam_id) == "served anyway"
    finally:
        await dead.aclose()


@given(listeners=st.integers(min_value=2, max_value=5), keys=st.integers(min_value=1, max_value=3))
async def test_property7_invalidation_reaches_every_listener(pools: PoolManager, tenant_id: str,
                                                             listeners: int, keys: int) -> None:
    cache = Cache(pools.redis, ttl_seconds=60, origin="test-origin")
    received: list[list[Invalidation]] = [[] for _ in range(listeners)]
    local_caches: list[dict[str, str]] = []
    subs = []
    for i in range(listeners):
        local = {exam_key(tenant_id, f"e{k}"): "stale" for k in range(keys)}
        local_caches.append(local)

        def apply(event: Invalidation, i: int = i, local: dict[str, str] = local) -> None:
            received[i].append(event)
            local.pop(event.key, None)

        subs.append(InvalidationListener(pools.redis, apply))
    for sub in subs:
        await sub.start()
    try:
        for k in range(keys):
            key = exam_key(tenant_id, f"e{k}")
            await cache.set_json(key, "cached")
            receivers = await cache.invalidate(tenant_id, key)
            assert receivers >= listeners
            assert await pools.redis.exists(key) == 0
        expected = [Invalidation(tenant_id, exam_key(tenant_id, f"e{k}"), "test-origin") for k in range(keys)]
        async with asyncio.timeout(5):
            while any([e for e in r if e.tenant_id == tenant_id] != expected for r in received):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert all(local == {} for local in local_caches)
    finally:
        for sub in subs:
            await sub.stop()


async def test_invalidate_refuses_another_tenants_key(pools: PoolManager, tenant_id: str) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    other_key = exam_key("someone-else", "e1")
    await cache.set_json(other_key, "theirs")
    try:
        with pytest.raises(ValueError):
            await cache.invalidate(tenant_id, other_key)
        assert await cache.get_json(other_key) == "theirs"
    finally:
        await cache.delete(other_key)


@pytest.mark.parametrize("concurrent_change", ["write", "invalidate"])
async def test_back_fill_never_overwrites_a_change_made_during_the_load(
        pools: PoolManager, tenant_id: str, concurrent_change: str) -> None:
    """A read that missed, loaded an old value, and back-fills after a newer write must not win."""
    cache = Cache(pools.redis, ttl_seconds=60)
    key = exam_key(tenant_id, str(uuid.uuid4()))

    async def stale_loader() -> dict[str, Any]:
        # The database answered with the old value; meanwhile a writer changes the key.
        if concurrent_change == "write":
            await cache.set_json(key, {"title": "new"})
        else:
            await cache.invalidate(tenant_id, key)
        return {"title": "old"}

    value, source = await cache.read_through(key, stale_loader)
    assert (value, source) == ({"title": "old"}, "database")
    expected = {"title": "new"} if concurrent_change == "write" else None
    assert await cache.get_json(key) == expected


async def test_back_fill_still_fills_when_nothing_changed(pools: PoolManager, tenant_id: str) -> None:
    cache = Cache(pools.redis, ttl_seconds=60)
    key = exam_key(tenant_id, str(uuid.uuid4()))

    async def loader() -> dict[str, Any]:
        return {"title": "db"}

    assert await cache.read_through(key, loader) == ({"title": "db"}, "database")
    assert await cache.read_through(key, loader) == ({"title": "db"}, "cache")
    assert 0 < await pools.redis.ttl(key) <= 60
