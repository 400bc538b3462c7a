"""Checkpointer storage against a real PostgreSQL: compression (property 16), old rows, threads, contract."""

import asyncio
import json
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agents.checkpointer import DEFAULT_COMPRESS_THRESHOLD, GradeflowSaver, open_saver
from tests.integration.agents.helpers import cfg, checkpoint_ids, ensure_checkpoint_tables, make_checkpoint, open_pool

PROPS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
META = {"source": "loop", "step": 0, "parents": {}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)


@pytest.fixture(scope="module")
async def pool(pg_url):
    async with open_pool(pg_url) as p:
        await ensure_checkpoint_tables(p)
        yield p


@pytest.fixture
async def saver(pool):
    return GradeflowSaver(pool, backoff_seconds=0)


@pytest.fixture
async def stock(pool):
    return AsyncPostgresSaver(pool)


async def _types(pool, table: str, thread_id: str) -> dict[str, str]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT channel AS ch, type FROM {table} WHERE thread_id = %s", (thread_id,)
        )).fetchall()
    return {r["ch"]: r["type"] for r in rows}


@PROPS
@given(value=json_values, pad=st.integers(0, 4000))
async def test_property16_large_checkpoints_stored_compressed_and_load_equal(pool, saver, value, pad):
    thread = f"p16-{uuid.uuid4()}"
    obj = {"value": value, "pad": "p" * pad}
    raw_len = len(JsonPlusSerializer().dumps_typed(obj)[1])
    expected = "msgpack+zstd" if raw_len >= DEFAULT_COMPRESS_THRESHOLD else "msgpack+raw"
    (cid,) = checkpoint_ids(1)
    await saver.aput(cfg(thread), make_checkpoint(cid, {"v": obj}, {"v": 1}), META, {"v": 1})
    await saver.aput_writes(cfg(thread, cid), [("v", obj)], task_id="t1")

    assert await _types(pool, "checkpoint_blobs", thread) == {"v": expected}
    assert await _types(pool, "checkpoint_writes", thread) == {"v": expected}
    tup = await saver.aget_tuple(cfg(thread))
    assert tup.checkpoint["channel_values"]["v"] == obj
    assert tup.pending_writes == [("t1", "v", obj)]
    if expected.endswith("zstd"):
        async with pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT length(blob) AS n FROM checkpoint_blobs WHERE thread_id = %s", (thread,)
            )).fetchone()
        if pad > 1000:
            assert row["n"] < raw_len / 2  # really compressed


async def test_graph_grades_channel_stored_compressed(pool, saver):
    from agents.context import GradingContext
    from agents.graph import build_grading_graph
    from tests.integration.agents.helpers import exam

    thread = f"graph-{uuid.uuid4()}"
    ctx = GradingContext("s", "t", "tr", questions=exam(4), answers={"t0": "kinetics energy"})
    await build_grading_graph(saver).ainvoke({}, cfg(thread), context=ctx)
    async with pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT DISTINCT type FROM checkpoint_blobs WHERE thread_id = %s AND channel = 'grades'", (thread,)
        )).fetchall()
    assert {r["type"] for r in rows} == {"msgpack+zstd"}


async def test_rows_written_by_stock_saver_still_load(pool, saver, stock):
    thread = f"stock-{uuid.uuid4()}"
    big = {"text": "q" * 5000, "n": [1, 2, 3]}
    (cid,) = checkpoint_ids(1)
    await stock.aput(cfg(thread), make_checkpoint(cid, {"v": big}, {"v": 1}), META, {"v": 1})
    await stock.aput_writes(cfg(thread, cid), [("v", big)], task_id="t1")
    assert await _types(pool, "checkpoint_blobs", thread) == {"v": "msgpack"}
    tup = await saver.aget_tuple(cfg(thread))
    assert tup.checkpoint["channel_values"]["v"] == big
    assert tup.pending_writes == [("t1", "v", big)]


async def test_graph_started_by_stock_saver_resumes_with_ours(saver, stock):
    from agents.context import GradingContext
    from agents.graph import build_grading_graph
    from tests.integration.agents.helpers import exam

    thread = f"mixed-{uuid.uuid4()}"
    ctx = GradingContext("s", "t", "tr", questions=exam(2), answers={"c": "a"})

    async def crash_on_t1(qid: str, grade: Any) -> None:
        if qid == "t1":
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        await build_grading_graph(stock, on_grade=crash_on_t1).ainvoke({}, cfg(thread), context=ctx)
    regraded: list[str] = []

    async def record(qid: str, grade: Any) -> None:
        regraded.append(qid)

    out = await build_grading_graph(saver, on_grade=record).ainvoke(None, cfg(thread), context=ctx)
    assert regraded == ["t1"]
    assert set(out["grades"]) == {"c", "n", "t0", "t1"} and out["total"] == 1


async def test_concurrent_serialization_from_threads(pool, saver):
    thread = f"conc-{uuid.uuid4()}"
    ids = checkpoint_ids(24)
    payloads = [{"i": i, "text": f"{i}-" * (300 + 37 * i)} for i in range(24)]

    async def put(i: int) -> None:
        await saver.aput(cfg(f"{thread}-{i}"), make_checkpoint(ids[i], {"v": payloads[i]}, {"v": 1}), META, {"v": 1})

    await asyncio.gather(*(put(i) for i in range(16)))
    # Dedicated threads (not the loop's executor, which aput itself needs for serializing).
    barrier = threading.Barrier(8, timeout=30)
    errors: list[BaseException] = []

    def sync_put(i: int) -> None:
        try:
            barrier.wait()
            saver.put(cfg(f"{thread}-{i}"), make_checkpoint(ids[i], {"v": payloads[i]}, {"v": 1}), META, {"v": 1})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=sync_put, args=(i,)) for i in range(16, 24)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join(60) for t in threads])
    assert errors == []
    loaded = await asyncio.gather(*(saver.aget_tuple(cfg(f"{thread}-{i}")) for i in range(24)))
    assert [t.checkpoint["channel_values"]["v"] for t in loaded] == payloads


def _norm(tup: Any, thread: str) -> Any:
    if tup is None:
        return None
    cp = {k: v for k, v in tup.checkpoint.items() if k != "ts"}
    data = {
        "config": tup.config,
        "checkpoint": cp,
        "metadata": tup.metadata,
        "parent": tup.parent_config,
        "writes": [list(w) for w in tup.pending_writes or []],
    }
    return json.loads(json.dumps(data, default=repr).replace(thread, "THREAD"))


CONTRACT_IDS = checkpoint_ids(6)


async def _exercise(saver: AsyncPostgresSaver) -> dict[str, Any]:
    thread = f"contract-{uuid.uuid4()}"
    out: dict[str, Any] = {}
    parent = None
    for i, cid in enumerate(CONTRACT_IDS[:4]):
        values = {"small": i, "big": {"text": "x" * 2000, "i": i}, "lst": [i] * i}
        versions = {"small": i + 1, "big": i + 1, "lst": i + 1} if i != 2 else {"small": i + 1}
        meta = {"source": "loop", "step": i, "parents": {}, "tag": "even" if i % 2 == 0 else "odd"}
        cp = make_checkpoint(cid, values, {"small": i + 1, "big": max(i, 1) if i == 2 else i + 1,
                                           "lst": max(i, 1) if i == 2 else i + 1})
        await saver.aput(cfg(thread, parent), cp, meta, versions)
        parent = cid
    last = CONTRACT_IDS[3]
    await saver.aput_writes(cfg(thread, last), [("big", {"w": "y" * 1000}), ("small", 5)], task_id="task-1")
    await saver.aput_writes(cfg(thread, last), [("__error__", "boom")], task_id="task-2")
    out["latest"] = _norm(await saver.aget_tuple(cfg(thread)), thread)
    out["by_id"] = _norm(await saver.aget_tuple(cfg(thread, CONTRACT_IDS[1])), thread)
    out["missing"] = _norm(await saver.aget_tuple(cfg(thread, "nope")), thread)
    out["all"] = [_norm(t, thread) async for t in saver.alist(cfg(thread))]
    out["filter"] = [_norm(t, thread) async for t in saver.alist(cfg(thread), filter={"tag": "even"})]
    out["before"] = [_norm(t, thread) async for t in saver.alist(cfg(thread), before=cfg(thread, CONTRACT_IDS[2]))]
    out["limit"] = [_norm(t, thread) async for t in saver.alist(cfg(thread), limit=2)]

    def sync_ops() -> Any:
        saver.put(cfg(thread, last), make_checkpoint(CONTRACT_IDS[4], {"small": 9}, {"small": 9}),
                  {"source": "update", "step": 4, "parents": {}}, {"small": 9})
        saver.put_writes(cfg(thread, CONTRACT_IDS[4]), [("small", 10)], task_id="task-3")
        return (_norm(saver.get_tuple(cfg(thread)), thread),
                [_norm(t, thread) for t in saver.list(cfg(thread), limit=2)])

    out["sync"] = await asyncio.to_thread(sync_ops)
    await saver.adelete_thread(thread)
    out["after_delete"] = await saver.aget_tuple(cfg(thread))
    out["after_delete_list"] = [t async for t in saver.alist(cfg(thread))]
    return out


async def test_contract_same_operations_same_results_as_stock(saver, stock):
    ours, theirs = await _exercise(saver), await _exercise(stock)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], key
    assert len(ours["all"]) == 4 and len(ours["filter"]) == 2
    assert len(ours["before"]) == 2 and len(ours["limit"]) == 2
    assert ours["latest"]["writes"] and ours["missing"] is None and ours["after_delete"] is None


async def test_sync_calls_from_event_loop_thread_are_refused(saver):
    with pytest.raises(asyncio.InvalidStateError):
        saver.get_tuple(cfg("x"))


async def test_open_saver_from_conninfo_and_pool_checks(pg_url):
    async with open_saver(pg_url) as s:
        assert await s.aget_tuple(cfg(f"none-{uuid.uuid4()}")) is None
    from psycopg_pool import AsyncConnectionPool

    bad = AsyncConnectionPool(pg_url, open=False)
    with pytest.raises(ValueError, match="autocommit"):
        async with open_saver(bad):
            pass
