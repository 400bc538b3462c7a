"""PostgreSQL checkpointer for the grading graph: zstd-compressed blobs and retried writes.

Built on ``langgraph.checkpoint.postgres.aio.AsyncPostgresSaver`` (whose tables already store
channel values as per-version blobs, so only changed channels are written). On top of it:

* the compressing serializer of :mod:`agents.serde` by default (``msgpack+zstd`` above a
  threshold, ``msgpack+raw`` below; untagged rows of the stock saver still load).
* :class:`GradeflowSaver`: ``aput`` / ``aput_writes`` (and so the sync ``put`` /
  ``put_writes``) are tried 3 times with a small backoff, then raise
  :class:`CheckpointWriteError`, which the activity maps to "manual intervention".
* :func:`load_resume_point`: tells the activity whether to resume or start afresh.
* a per-run hook (:meth:`GradeflowSaver.for_run`'s ``on_writes``) awaited inside the transaction
  that stores a task's writes: the grading activity records its grader calls there, so per-question
  durability costs no transaction of its own and a call is never recorded later than its grade.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import WRITES_IDX_MAP, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agents.serde import DEFAULT_COMPRESS_THRESHOLD, RAW_TAG, ZSTD_TAG, ZstdCipher, make_serde

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "DEFAULT_COMPRESS_THRESHOLD",
    "RAW_TAG",
    "ZSTD_TAG",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "GradeflowSaver",
    "ResumePoint",
    "ZstdCipher",
    "load_resume_point",
    "make_serde",
    "open_saver",
]

DEFAULT_WRITE_ATTEMPTS = 3
"""Checkpoint write tries before giving up."""
DEFAULT_BACKOFF_SECONDS = 0.05
"""Base of the linear backoff between write tries."""

WritesHook = Callable[[Any, Sequence[tuple[str, Any]]], Awaitable[None]]
"""``(connection, writes)``: awaited inside the transaction that stores a task's pending writes."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint write failed on every try; the job needs manual intervention."""

    def __init__(self, operation: str, attempts: int, cause: BaseException) -> None:
        """Record the failed operation.

        Args:
            operation: ``aput`` or ``aput_writes``.
            attempts: Tries made.
            cause: Last error raised.

        """
        super().__init__(f"checkpoint {operation} failed after {attempts} attempts: {cause!r}")
        self.operation = operation
        self.attempts = attempts
        self.cause = cause
        self.__cause__ = cause


class CorruptCheckpointError(RuntimeError):
    """The latest checkpoint of a thread exists but cannot be loaded."""

    def __init__(self, thread_id: str, reason: str) -> None:
        """Record why loading failed.

        Args:
            thread_id: Thread whose checkpoint is unreadable.
            reason: What went wrong, for logs and the job record.

        """
        super().__init__(f"checkpoint of thread {thread_id!r} cannot be loaded: {reason}")
        self.thread_id = thread_id
        self.reason = reason


class GradeflowSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` with compressed blobs and bounded retries of writes."""

    def __init__(
        self,
        conn: Any,
        pipe: Any = None,
        serde: SerializerProtocol | None = None,
        *,
        max_attempts: int = DEFAULT_WRITE_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    ) -> None:
        """Create the saver (call from a running event loop, like the stock saver).

        Args:
            conn: ``AsyncConnectionPool`` (or ``AsyncConnection``) with ``autocommit=True``,
                ``prepare_threshold=0`` and ``row_factory=dict_row``.
            pipe: Optional pipeline, only with a single connection.
            serde: Serializer; default :func:`make_serde`.
            max_attempts: Tries per write before :class:`CheckpointWriteError`.
            backoff_seconds: Sleep before try ``n+1`` is ``backoff_seconds * n``.

        """
        super().__init__(conn, pipe=pipe, serde=serde or make_serde())
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self._serde_arg = serde
        self.on_writes: WritesHook | None = None
        self.on_failure: Callable[[CheckpointWriteError], None] | None = None

    def for_run(self, *, on_writes: WritesHook | None = None,
                on_failure: Callable[[CheckpointWriteError], None] | None = None) -> GradeflowSaver:
        """A saver of its own for one agent run, on the same pool.

        ``AsyncPostgresSaver`` serialises every read and write of one instance behind one
        ``asyncio.Lock``; concurrent agent runs sharing a saver would queue their checkpoint writes
        behind each other (finished questions waiting seconds, lost by a SIGKILL). Each run gets its
        own lock; connections still come from the shared pool. A saver on a single connection (not a
        pool) shares this one's lock (one connection serves one cursor at a time).

        Args:
            on_writes: awaited with ``(connection, writes)`` inside the transaction that stores each
                task's pending writes, before them: what it writes commits with them or not at all.
            on_failure: called (from the thread of the write) with the error of a write that failed on
                every try, before it is raised. LangGraph only raises it at the end of the step, after
                the step's other tasks; a run can stop at once instead of grading on unsaved.

        """
        if not isinstance(self.conn, AsyncConnectionPool) and on_writes is None and on_failure is None:
            return self
        saver = GradeflowSaver(self.conn, serde=self._serde_arg, max_attempts=self.max_attempts,
                               backoff_seconds=self.backoff_seconds)
        if not isinstance(self.conn, AsyncConnectionPool):
            saver.lock = self.lock
        saver.on_writes = on_writes
        saver.on_failure = on_failure
        return saver

    async def _retrying(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await call()
            except Exception as exc:  # noqa: BLE001 - any DB failure counts; the last one is re-raised
                last = exc
                logger.warning(
                    "checkpoint %s failed (attempt %d/%d): %r", operation, attempt, self.max_attempts, exc
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff_seconds * attempt)
        assert last is not None
        error = CheckpointWriteError(operation, self.max_attempts, last)
        if self.on_failure is not None:
            self.on_failure(error)
        raise error

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save a checkpoint, retrying; see ``AsyncPostgresSaver.aput``.

        Raises:
            CheckpointWriteError: Every try failed.

        """
        put = super().aput
        return await self._retrying("aput", lambda: put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes, retrying; see ``AsyncPostgresSaver.aput_writes``.

        Raises:
            CheckpointWriteError: Every try failed.

        """
        hook = self.on_writes
        if hook is None:
            put_writes = super().aput_writes
            await self._retrying("aput_writes", lambda: put_writes(config, writes, task_id, task_path))
            return
        await self._retrying("aput_writes", lambda: self._put_writes_with(hook, config, writes, task_id, task_path))

    async def _put_writes_with(self, hook: WritesHook, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                               task_id: str, task_path: str) -> None:
        """``AsyncPostgresSaver.aput_writes`` in one explicit transaction that first awaits ``hook``."""
        query = (self.UPSERT_CHECKPOINT_WRITES_SQL if all(w[0] in WRITES_IDX_MAP for w in writes)
                 else self.INSERT_CHECKPOINT_WRITES_SQL)
        configurable = config["configurable"]
        params = await asyncio.to_thread(self._dump_writes, configurable["thread_id"], configurable["checkpoint_ns"],
                                         configurable["checkpoint_id"], task_id, task_path, writes)
        async with self._cursor(pipeline=True) as cur, cur.connection.transaction():
            await hook(cur.connection, writes)
            await cur.executemany(query, params)


def _check_pool_kwargs(pool: AsyncConnectionPool) -> None:
    kwargs = getattr(pool, "kwargs", None) or {}
    if callable(kwargs):  # resolved per connection: cannot be checked up front
        return
    problems = []
    if not kwargs.get("autocommit"):
        problems.append("autocommit=True")
    if kwargs.get("row_factory") is not dict_row:
        problems.append("row_factory=dict_row")
    if kwargs.get("prepare_threshold", -1) is not None and kwargs.get("prepare_threshold") != 0:
        problems.append("prepare_threshold=0")
    if problems:
        raise ValueError(f"checkpoint pool must be created with kwargs {', '.join(problems)}")


@asynccontextmanager
async def open_saver(
    conninfo_or_pool: str | AsyncConnectionPool,
    *,
    setup: bool = False,
    serde: SerializerProtocol | None = None,
    max_attempts: int = DEFAULT_WRITE_ATTEMPTS,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    max_pool_size: int = 4,
) -> AsyncIterator[GradeflowSaver]:
    """Open a :class:`GradeflowSaver` on a pool or a connection string.

    A given pool is borrowed (not closed on exit); for a conninfo string a small pool is
    opened and closed on exit.

    Args:
        conninfo_or_pool: ``AsyncConnectionPool`` created with ``kwargs={"autocommit": True,
            "prepare_threshold": 0, "row_factory": dict_row}``, or a conninfo string.
        setup: Create / migrate the checkpoint tables first (``saver.setup()``).
        serde: Serializer; default :func:`make_serde`.
        max_attempts: Tries per checkpoint write.
        backoff_seconds: Backoff base between tries.
        max_pool_size: Pool size when opening from a string.

    Raises:
        ValueError: The given pool lacks the connection options the saver needs.

    """
    if isinstance(conninfo_or_pool, AsyncConnectionPool):
        _check_pool_kwargs(conninfo_or_pool)
        saver = GradeflowSaver(
            conninfo_or_pool, serde=serde, max_attempts=max_attempts, backoff_seconds=backoff_seconds
        )
        if setup:
            await saver.setup()
        yield saver
        return
    pool: AsyncConnectionPool = AsyncConnectionPool(
        conninfo_or_pool,
        min_size=1,
        max_size=max_pool_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=False,
    )
    await pool.open()
    try:
        saver = GradeflowSaver(pool, serde=serde, max_attempts=max_attempts, backoff_seconds=backoff_seconds)
        if setup:
            await saver.setup()
        yield saver
    finally:
        await pool.close()


@dataclass(frozen=True)
class ResumePoint:
    """The latest loadable checkpoint of a thread."""

    config: RunnableConfig
    """Config pinning the checkpoint (thread_id, checkpoint_ns, checkpoint_id)."""
    checkpoint_id: str
    """Id of the checkpoint."""
    step: int | None
    """Superstep recorded in its metadata."""
    pending_writes: int
    """Pending writes stored with it (finished tasks of the interrupted step)."""


async def load_resume_point(
    saver: AsyncPostgresSaver, thread_id: str, *, checkpoint_ns: str = ""
) -> ResumePoint | None:
    """Find where a thread can resume.

    Args:
        saver: Checkpointer to read from.
        thread_id: Thread (the workflow run id).
        checkpoint_ns: Checkpoint namespace (root graph: ``""``).

    Returns:
        ``None`` when the thread has no checkpoint (start afresh), else the resume point
        (resume with ``graph.ainvoke(None, {"configurable": {"thread_id": thread_id}}, ...)``).

    Raises:
        CorruptCheckpointError: The latest checkpoint exists but does not deserialize
            (start afresh on a new thread, or mark the job for review).
        psycopg.Error: The database could not be read (a retryable failure, not corruption).

    """
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}}
    try:
        tup = await saver.aget_tuple(config)
    except psycopg.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means an unusable checkpoint
        raise CorruptCheckpointError(thread_id, f"{type(exc).__name__}: {exc}") from exc
    if tup is None:
        return None
    return ResumePoint(
        config=tup.config,
        checkpoint_id=tup.checkpoint["id"],
        step=(tup.metadata or {}).get("step"),
        pending_writes=len(tup.pending_writes or []),
    )
