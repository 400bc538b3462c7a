"""The workers' in-process rubric cache against real PostgreSQL and Redis.

Misses load PostgreSQL once and then serve from memory; broadcasts of the exam's key (or of one of
its rubric hash keys) drop the entry; a fill racing an invalidation is not stored; TTL and size
bounds hold; a lost subscription clears the cache and reads bypass it until it is back.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from agents.rubric import Question, Rubric
from infra.cache.copies import Cache, Invalidation
from infra.cache.keys import exam_key, rubric_hash_key, submission_key
from infra.db.pools import PoolManager
from infra.settings import Settings
from infra.stores import exams, grading
from infra.stores.grading import Conn, ExamQuestions
from infra.stores.rubrics import RubricCache, exam_of

QUESTIONS = [
    Question(id="c", type="choice", prompt="Pick", max_points=2,
             rubric={"options": ["a", "b", "c"], "correct": ["a"]}),
    Question(id="n", type="numeric", prompt="Compute", max_points=3, rubric={"value": 2.0, "abs_tol": 0.1}),
]


class CountingLoader:
    """The real PostgreSQL loader, counting its calls; ``during`` runs inside each load."""

    def __init__(self, during: Callable[[], Any] | None = None) -> None:
        self.calls = 0
        self.during = during

    async def __call__(self, conn: Conn, exam_id: str) -> ExamQuestions:
        self.calls += 1
        exam = await grading.load_exam_questions(conn, exam_id)
        if self.during is not None:
            await self.during()
        return exam


async def _exam(pools: PoolManager, tenant_id: str) -> dict[str, Any]:
    return await exams.create_exam(pools, Cache(pools.redis, ttl_seconds=60), tenant_id, title="t",
                                         questions=QUESTIONS)


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.01)


@pytest.fixture
async def started() -> AsyncIterator[list[RubricCache]]:
    """Caches to stop at the end of the test (``started.append(cache)`` after ``start()``)."""
    caches: list[RubricCache] = []
    yield caches
    for cache in caches:
        await cache.stop()


async def _cache(pools: PoolManager, started: list[RubricCache], **kw: Any) -> RubricCache:
    settings = kw.pop("settings", Settings(env="test"))
    cache = RubricCache(pools, settings, **kw)
    await cache.start()
    started.append(cache)
    return cache


def test_exam_of_names_the_exam_of_its_own_tenant_only() -> None:
    assert exam_of(Invalidation("t1", exam_key("t1", "e1"), "o")) == "e1"
    assert exam_of(Invalidation("t1", rubric_hash_key("t1", "e1", "q1", 3), "o")) == "e1"
    assert exam_of(Invalidation("t1", exam_key("t2", "e1"), "o")) is None
    assert exam_of(Invalidation("t1", submission_key("t1", "e1"), "o")) is None


async def test_miss_loads_once_then_memory_serves(pools: PoolManager, tenant_id: str,
                                                  started: list[RubricCache]) -> None:
    exam = await _exam(pools, tenant_id)
    loader = CountingLoader()
    cache = await _cache(pools, started, loader=loader)
    assert cache.listening
    # The hash of one question is missing in Redis: it is back-filled from PostgreSQL.
    await pools.redis.delete(rubric_hash_key(tenant_id, exam["id"], "n", 1))
    first = await cache.get(tenant_id, exam["id"])
    assert [q.id for q in first.questions] == ["c", "n"]
    assert first.rubric_versions == {"c": 1, "n": 1}
    assert first.rubric_hashes == {q["id"]: q["rubric_hash"] for q in exam["questions"]}
    assert json.loads(await pools.redis.get(rubric_hash_key(tenant_id, exam["id"], "n", 1))) == first.rubric_hashes["n"]
    for _ in range(3):
        assert await cache.get(tenant_id, exam["id"]) is first
    assert loader.calls == 1
    assert (cache.stats.misses, cache.stats.hits) == (1, 3)


async def test_unknown_exam_is_not_cached(pools: PoolManager, tenant_id: str, started: list[RubricCache]) -> None:
    loader = CountingLoader()
    cache = await _cache(pools, started, loader=loader)
    nobody = "00000000-0000-0000-0000-000000000000"
    assert (await cache.get(tenant_id, nobody)).questions == ()
    assert (await cache.get(tenant_id, nobody)).questions == ()
    assert loader.calls == 2


async def test_broadcasts_drop_only_the_named_exam(pools: PoolManager, tenant_id: str,
                                                   started: list[RubricCache]) -> None:
    first, second = await _exam(pools, tenant_id), await _exam(pools, tenant_id)
    cache = await _cache(pools, started)
    sender = Cache(pools.redis, ttl_seconds=60)
    for exam in (first, second):
        await cache.get(tenant_id, exam["id"])
    # Unrelated keys (another kind, another tenant's exam of the same id) drop nothing.
    await sender.invalidate(tenant_id, submission_key(tenant_id, first["id"]))
    await Cache(pools.redis, ttl_seconds=60).invalidate("other-tenant", exam_key("other-tenant", first["id"]))
    await sender.invalidate(tenant_id, rubric_hash_key(tenant_id, second["id"], "c", 1))
    await _eventually(lambda: (tenant_id, second["id"]) not in cache)
    assert (tenant_id, first["id"]) in cache
    await sender.invalidate(tenant_id, exam_key(tenant_id, first["id"]))
    await _eventually(lambda: len(cache) == 0)
    assert cache.stats.invalidated == 2


async def test_fill_racing_an_invalidation_is_not_stored(pools: PoolManager, tenant_id: str,
                                                         started: list[RubricCache]) -> None:
    exam = await _exam(pools, tenant_id)
    applied = asyncio.Event()

    async def change_meanwhile() -> None:
        # The rubric changes after our PostgreSQL read, before the fill: the read is stale.
        await exams.update_rubric(pools, Cache(pools.redis, ttl_seconds=60), tenant_id, exam["id"], "c",
                                        Rubric(options=["a", "b", "c"], correct=["b"]))
        async with asyncio.timeout(5):
            await applied.wait()

    loader = CountingLoader(change_meanwhile)
    cache = await _cache(pools, started, loader=loader)
    assert cache.listener is not None
    apply = cache.listener.on_invalidate

    def spy(event: Invalidation) -> None:
        apply(event)
        if event.tenant_id == tenant_id:
            applied.set()

    cache.listener.on_invalidate = spy
    stale = await cache.get(tenant_id, exam["id"])
    assert stale.rubric_versions["c"] == 1
    assert (tenant_id, exam["id"]) not in cache  # not stored
    loader.during = None
    fresh = await cache.get(tenant_id, exam["id"])
    assert fresh.rubric_versions["c"] == 2 and (tenant_id, exam["id"]) in cache


async def test_ttl_is_a_safety_net(pools: PoolManager, tenant_id: str, started: list[RubricCache]) -> None:
    exam = await _exam(pools, tenant_id)
    now = [1000.0]
    loader = CountingLoader()
    cache = await _cache(pools, started, loader=loader, clock=lambda: now[0],
                         settings=Settings(env="test", rubric_cache_ttl_seconds=30))
    await cache.get(tenant_id, exam["id"])
    now[0] += 29
    await cache.get(tenant_id, exam["id"])
    assert loader.calls == 1
    now[0] += 2
    await cache.get(tenant_id, exam["id"])
    assert loader.calls == 2 and cache.stats.expired == 1


async def test_size_is_bounded_least_recently_used_first(pools: PoolManager, tenant_id: str,
                                                         started: list[RubricCache]) -> None:
    a, b, c = [await _exam(pools, tenant_id) for _ in range(3)]
    cache = await _cache(pools, started, settings=Settings(env="test", rubric_cache_max_entries=2))
    await cache.get(tenant_id, a["id"])
    await cache.get(tenant_id, b["id"])
    await cache.get(tenant_id, a["id"])  # a is now the most recently used
    await cache.get(tenant_id, c["id"])
    assert (tenant_id, a["id"]) in cache and (tenant_id, c["id"]) in cache
    assert (tenant_id, b["id"]) not in cache
    assert len(cache) == 2 and cache.stats.evicted == 1


async def test_lost_subscription_clears_and_bypasses_until_back(pools: PoolManager, tenant_id: str,
                                                                started: list[RubricCache],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    exam = await _exam(pools, tenant_id)
    loader = CountingLoader()
    cache = await _cache(pools, started, loader=loader)
    await cache.get(tenant_id, exam["id"])
    assert (tenant_id, exam["id"]) in cache
    clients = await pools.redis.client_list(_type="pubsub")
    ours = [c for c in clients if c.get("name") == cache.client_name]
    assert len(ours) == 1
    with caplog.at_level("WARNING", logger="infra.stores.rubrics"):
        await pools.redis.client_kill_filter(_id=ours[0]["id"])
        await _eventually(lambda: cache.stats.cleared == 1)
    assert len(cache) == 0
    assert "lost its invalidation subscription" in caplog.text
    # Whatever is read until the subscription is back is served, not stored.
    if not cache.listening:
        await cache.get(tenant_id, exam["id"])
        assert len(cache) == 0
    await _eventually(lambda: cache.listening)
    calls = loader.calls
    await cache.get(tenant_id, exam["id"])
    await cache.get(tenant_id, exam["id"])
    assert loader.calls == calls + 1 and (tenant_id, exam["id"]) in cache


async def test_redis_unreachable_at_start_bypasses_the_cache(pools: PoolManager, tenant_id: str,
                                                             started: list[RubricCache]) -> None:
    exam = await _exam(pools, tenant_id)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        dead = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, decode_responses=True)
        try:
            loader = CountingLoader()
            cache = await _cache(pools, started, loader=loader, listener_redis=dead)
            assert not cache.listening
            for _ in range(2):
                served = await cache.get(tenant_id, exam["id"])
                assert served.rubric_versions == {"c": 1, "n": 1}
            assert loader.calls == 2 and len(cache) == 0 and cache.stats.bypassed == 2
            await cache.stop()
            started.remove(cache)
        finally:
            await dead.aclose()


async def test_a_wrong_hash_in_redis_is_repaired_from_postgres(pools: PoolManager, tenant_id: str,
                                                               started: list[RubricCache]) -> None:
    exam = await _exam(pools, tenant_id)
    key = rubric_hash_key(tenant_id, exam["id"], "c", 1)
    await pools.redis.set(key, json.dumps("not-the-hash"))
    cache = await _cache(pools, started)
    served = await cache.get(tenant_id, exam["id"])
    assert served.rubric_hashes["c"] == exam["questions"][0]["rubric_hash"]
    assert json.loads(await pools.redis.get(key)) == served.rubric_hashes["c"]
