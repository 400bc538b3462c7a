"""In-process cache of exams' questions and rubrics for the grading workers.

Every agent run needs its exam's questions with their current rubric versions and precomputed
hashes. A :class:`RubricCache` (one per worker process) keeps them keyed by
``(tenant_id, exam_id)``, bounded (least recently used dropped first):

- a miss loads PostgreSQL (the truth: questions, rubric versions and the hash stored beside each
  version) and checks the hashes against the copies the API cached in Redis under
  :func:`infra.cache.keys.rubric_hash_key`, back-filling missing ones (architecture property 11);
- a hit is served from memory, with no version check against PostgreSQL on each read;
- correctness comes from the invalidation broadcast: an :class:`infra.cache.copies.Invalidation` of the
  exam's :func:`infra.cache.keys.exam_key` (or of one of its rubric hash keys), received through the
  cache's own :class:`infra.cache.copies.InvalidationListener`, drops the entry (property 7), and a fill
  whose load raced with an invalidation is not stored;
- ``rubric_cache_ttl_seconds`` is the safety net for a lost broadcast;
- pub/sub is at most once, so when the subscription drops the cache is cleared (logged) and reads
  go to the stores, unstored, until it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from infra.cache.copies import Invalidation, InvalidationListener
from infra.cache.keys import exam_key, rubric_hash_key
from infra.db.pools import PoolManager
from infra.observability.metrics import record_cache_lookup
from infra.stores import grading
from infra.stores.grading import Conn, ExamQuestions, QuestionsLoader

logger = logging.getLogger(__name__)

CacheKey = tuple[str, str]
"""``(tenant_id, exam_id)``."""


@dataclass
class RubricCacheStats:
    """Counters of one cache (for tests and metrics)."""

    hits: int = 0
    """Reads served from memory."""
    misses: int = 0
    """Reads that loaded the stores and could cache the result."""
    bypassed: int = 0
    """Reads served from the stores, uncached, while not subscribed."""
    invalidated: int = 0
    """Entries dropped by a broadcast."""
    expired: int = 0
    """Entries dropped by the TTL."""
    evicted: int = 0
    """Entries dropped by the size bound."""
    cleared: int = 0
    """Times the subscription dropped and the whole cache was cleared."""


@dataclass(frozen=True)
class _Entry:
    value: ExamQuestions
    expires_at: float


class _SubscriptionFlag(asyncio.Event):
    """The listener's ``subscribed`` event, reporting each change to the cache.

    :class:`infra.cache.copies.InvalidationListener` sets it once subscribed and clears it whenever the
    subscription ends (Redis error, stop), which is exactly when the cache stops being trustworthy.
    """

    def __init__(self, on_change: Callable[[bool], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def set(self) -> None:
        """Mark subscribed (and report it once)."""
        if not self.is_set():
            super().set()
            self._on_change(True)

    def clear(self) -> None:
        """Mark unsubscribed (and report it once)."""
        if self.is_set():
            super().clear()
            self._on_change(False)


def exam_of(event: Invalidation) -> str | None:
    """Exam named by an invalidation of its hot copy or of one of its rubric hashes (else ``None``).

    The prefixes are built from the event's own tenant, so a key of another tenant never matches.
    """
    prefixes = (exam_key(event.tenant_id, ""), rubric_hash_key(event.tenant_id, "", "", 0).removesuffix("::0"))
    for prefix in prefixes:
        if event.key.startswith(prefix):
            return event.key[len(prefix):].split(":", 1)[0] or None
    return None


def listener_client(redis: aioredis.Redis, *, name: str) -> aioredis.Redis:
    """A dedicated client on ``redis``'s server for the subscription, which never reconnects silently.

    With retries, redis-py reconnects a pub/sub connection and re-subscribes by itself, hiding the
    gap and the invalidations lost in it; with none, every drop reaches the listener.
    """
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "client_name": name}
    return aioredis.Redis.from_pool(
        aioredis.ConnectionPool(connection_class=pool.connection_class, max_connections=4, **kwargs))


def questions_loader(cache: RubricCache | None, tenant_id: str) -> QuestionsLoader:
    """Where an activity gets an exam's questions: the worker's cache, or PostgreSQL without one."""
    if cache is None:
        return grading.load_exam_questions

    async def load(conn: Conn, exam_id: str) -> ExamQuestions:
        return await cache.get(tenant_id, exam_id, conn=conn)

    return load


class RubricCache:
    """One worker process's cache of exams' questions and rubrics.

    Use as ``async with RubricCache(pools, settings):`` or ``start()``/``stop()``.

    Args:
        pools: The process's pool manager (PostgreSQL with RLS; Redis for the cached hashes).
        settings: :class:`infra.settings.Settings` (``rubric_cache_ttl_seconds``,
            ``rubric_cache_max_entries``, ``cache_ttl_seconds`` for back-filled hashes).
        loader: PostgreSQL loader of an exam's questions (tests count its calls).
        listener_redis: Client for the subscription (default: a dedicated one, see
            :func:`listener_client`; the caller closes one it passes).
        clock: Monotonic clock for the TTL (tests).

    """

    def __init__(self, pools: PoolManager, settings: object, *,
                 loader: QuestionsLoader = grading.load_exam_questions,
                 listener_redis: aioredis.Redis | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pools = pools
        self.ttl_seconds = float(getattr(settings, "rubric_cache_ttl_seconds", 300.0))
        self.max_entries = int(getattr(settings, "rubric_cache_max_entries", 1024))
        self.hash_ttl_seconds = int(getattr(settings, "cache_ttl_seconds", 3600))
        self.loader = loader
        self.stats = RubricCacheStats()
        self.client_name = f"gf-rubric-cache-{os.getpid()}-{id(self):x}"
        """Name of the subscription's Redis connection (``CLIENT LIST``)."""
        self.listener: InvalidationListener | None = None
        self._given_redis = listener_redis
        self._redis: aioredis.Redis | None = None
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._epoch = 0
        self._stopping = False

    @property
    def listening(self) -> bool:
        """Whether the invalidation subscription is active (only then is anything cached)."""
        return self.listener is not None and self.listener.subscribed.is_set()

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe to invalidations; with Redis unreachable, start anyway (reads bypass the cache)."""
        self._stopping = False
        self._redis = self._given_redis or listener_client(self.pools.redis, name=self.client_name)
        self.listener = InvalidationListener(self._redis, self.apply)
        self.listener.subscribed = _SubscriptionFlag(self._subscription_changed)
        try:
            await self.listener.start(timeout)
        except TimeoutError as exc:
            logger.warning("rubric cache not subscribed (%s); reads go to the stores until it is", exc)

    async def stop(self) -> None:
        """Unsubscribe, close the dedicated client and drop every entry."""
        self._stopping = True
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        if self._redis is not None and self._given_redis is None:
            await self._redis.aclose()
        self._redis = None
        self.clear()

    async def __aenter__(self) -> RubricCache:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry and void the fills in flight."""
        self._entries.clear()
        self._epoch += 1

    def apply(self, event: Invalidation) -> None:
        """Invalidation callback: drop the exam's entry and void fills in flight."""
        exam_id = exam_of(event)
        if exam_id is None:
            return
        self._epoch += 1
        if self._entries.pop((event.tenant_id, exam_id), None) is not None:
            self.stats.invalidated += 1
            logger.debug("rubric cache dropped exam %s of %s (from %s)", exam_id, event.tenant_id, event.origin)

    def _subscription_changed(self, subscribed: bool) -> None:
        self._epoch += 1  # a load that overlapped the change may have missed an invalidation
        if subscribed:
            logger.info("rubric cache subscribed to invalidations")
            return
        dropped = len(self._entries)
        self._entries.clear()
        if self._stopping:
            return
        self.stats.cleared += 1
        logger.warning("rubric cache lost its invalidation subscription: cleared %d exams; reads go to the "
                       "stores until it is back", dropped)

    async def get(self, tenant_id: str, exam_id: str, *, conn: Conn | None = None) -> ExamQuestions:
        """Return an exam's questions with current rubric versions and hashes (treat as read-only).

        Args:
            tenant_id: Tenant owning the exam.
            exam_id: The exam.
            conn: Connection in ``tenant_id``'s transaction to load with on a miss (default: a new one).

        """
        if not self.listening:
            self.stats.bypassed += 1
            record_cache_lookup("rubric", hit=False)
            return await self._load(tenant_id, exam_id, conn, check_redis=False)
        key, now = (tenant_id, exam_id), self._clock()
        entry = self._entries.get(key)
        if entry is not None:
            if now < entry.expires_at:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                record_cache_lookup("rubric", hit=True)
                return entry.value
            del self._entries[key]
            self.stats.expired += 1
        self.stats.misses += 1
        record_cache_lookup("rubric", hit=False)
        epoch = self._epoch
        value = await self._load(tenant_id, exam_id, conn, check_redis=True)
        if epoch == self._epoch and self.listening and value.questions:
            self._entries[key] = _Entry(value, now + self.ttl_seconds)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.stats.evicted += 1
        return value

    async def _load(self, tenant_id: str, exam_id: str, conn: Conn | None, *, check_redis: bool) -> ExamQuestions:
        if conn is None:
            async with self.pools.transaction(tenant_id) as own:
                exam = await self.loader(own, exam_id)
        else:
            exam = await self.loader(conn, exam_id)
        if check_redis and exam.questions:
            await self._check_cached_hashes(tenant_id, exam_id, exam)
        return exam

    async def _check_cached_hashes(self, tenant_id: str, exam_id: str, exam: ExamQuestions) -> None:
        """Compare the hashes cached in Redis with PostgreSQL's; back-fill missing or wrong ones.

        Best effort: a Redis failure is logged, PostgreSQL's stored hashes are served.
        """
        keys = {q.id: rubric_hash_key(tenant_id, exam_id, q.id, exam.rubric_versions[q.id]) for q in exam.questions}
        try:
            cached = await self.pools.redis.mget(list(keys.values()))
            repair = {}
            for (qid, key), raw in zip(keys.items(), cached, strict=True):
                if raw is not None and _decode(raw) == exam.rubric_hashes[qid]:
                    continue
                if raw is not None:
                    logger.error("rubric hash %s in Redis differs from PostgreSQL; PostgreSQL's is served", key)
                repair[key] = json.dumps(exam.rubric_hashes[qid])
            if repair:
                async with self.pools.redis.pipeline(transaction=False) as pipe:
                    for key, value in repair.items():
                        pipe.set(key, value, ex=self.hash_ttl_seconds)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.warning("rubric hashes of exam %s not checked against Redis: %s", exam_id, exc)


def _decode(raw: str | bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None
