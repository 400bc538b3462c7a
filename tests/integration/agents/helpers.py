"""Helpers for the checkpointer integration tests (no fixtures: conftest holds only pg_url)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agents.rubric import Question

POOL_KWARGS = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


class FlakyPool(AsyncConnectionPool):
    """Pool whose next ``fail_next`` connection checkouts raise ``OperationalError``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_next = 0
        self.failures = 0

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failures += 1
            raise psycopg.OperationalError("injected: server closed the connection unexpectedly")
        async with super().connection(timeout) as conn:
            yield conn


@asynccontextmanager
async def open_pool(url: str, cls: type[AsyncConnectionPool] = AsyncConnectionPool) -> AsyncIterator[Any]:
    pool = cls(url, min_size=1, max_size=6, kwargs=POOL_KWARGS, open=False)
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


def checkpoint_ids(n: int) -> list[str]:
    """``n`` increasing checkpoint ids."""
    return [str(uuid6(clock_seq=i)) for i in range(n)]


def make_checkpoint(cid: str, values: dict[str, Any], versions: dict[str, Any]) -> Checkpoint:
    cp = empty_checkpoint()
    cp["id"] = cid
    cp["channel_values"] = dict(values)
    cp["channel_versions"] = dict(versions)
    return cp


def cfg(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def exam(n_text: int = 2) -> list[Question]:
    qs = [
        Question(id="c", type="choice", prompt="Pick", max_points=1, rubric={"options": ["a", "b"], "correct": ["a"]}),
        Question(id="n", type="numeric", prompt="2+2", max_points=1, rubric={"value": 4}),
    ]
    for i in range(n_text):
        qs.append(Question(
            id=f"t{i}", type="essay", prompt="Explain", max_points=2,
            rubric={"criteria": [
                {"id": "k", "description": "mentions kinetics " * 20, "points": 1, "keywords": ["kinetics"]},
                {"id": "e", "description": "mentions energy " * 20, "points": 1, "keywords": ["energy"]},
            ]},
        ))
    return qs


async def ensure_checkpoint_tables(pool: AsyncConnectionPool) -> None:
    """Create the checkpoint tables, unless the role may not (then ``gradeflow migrate`` made them)."""
    from agents.checkpointer import GradeflowSaver

    try:
        await GradeflowSaver(pool).setup()
    except psycopg.errors.InsufficientPrivilege:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT to_regclass('checkpoint_blobs') AS t")).fetchone()
        assert row["t"] is not None, "checkpoint tables missing and this role cannot create them"
