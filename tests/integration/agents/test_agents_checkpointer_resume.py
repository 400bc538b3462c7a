"""History, resume and write retries against a real PostgreSQL (properties 17 and 18)."""

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from agents.checkpointer import (
    CheckpointWriteError,
    CorruptCheckpointError,
    GradeflowSaver,
    load_resume_point,
)
from agents.context import GradingContext
from agents.graph import build_grading_graph
from tests.integration.agents.helpers import (
    FlakyPool,
    cfg,
    checkpoint_ids,
    ensure_checkpoint_tables,
    exam,
    make_checkpoint,
    open_pool,
)

PROPS = settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
META = {"source": "loop", "step": 0, "parents": {}}

# Top-level strings are inlined in the checkpoint's jsonb, which cannot hold NUL (true of the
# stock saver too); NUL inside blob values is fine.
inline_text = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=20)
states = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.integers(), inline_text, st.lists(st.text(max_size=400), max_size=5)),
    min_size=1,
)
answers = st.fixed_dictionaries({
    "c": st.sampled_from(["a", "b"]),
    "n": st.sampled_from(["4", "5", "x"]),
    "t0": st.sampled_from(["", "kinetics", "kinetics and energy", "kinetcs"]),
    "t1": st.text(max_size=40),
})


@pytest.fixture(scope="module")
async def pool(pg_url):
    async with open_pool(pg_url, FlakyPool) as p:
        await ensure_checkpoint_tables(p)
        yield p


@pytest.fixture
async def saver(pool):
    pool.fail_next = 0
    pool.failures = 0
    yield GradeflowSaver(pool, backoff_seconds=0)
    pool.fail_next = 0


def _ctx(ans: dict[str, Any]) -> GradingContext:
    return GradingContext("sub", "ten", "trace", questions=exam(2), answers=ans)


@PROPS
@given(history=st.lists(states, min_size=1, max_size=6))
async def test_property17_every_historical_checkpoint_restores_its_state(saver, history):
    thread = f"p17-{uuid.uuid4()}"
    ids = checkpoint_ids(len(history))
    parent = None
    for i, (cid, values) in enumerate(zip(ids, history, strict=True)):
        versions = {k: i + 1 for k in values}
        await saver.aput(cfg(thread, parent), make_checkpoint(cid, values, versions),
                         {**META, "step": i}, versions)
        parent = cid
    listed = [t async for t in saver.alist(cfg(thread))]
    assert [t.checkpoint["id"] for t in listed] == list(reversed(ids))
    for tup in listed:
        i = ids.index(tup.checkpoint["id"])
        assert tup.checkpoint["channel_values"] == history[i]
        assert tup.metadata["step"] == i
        again = await saver.aget_tuple(tup.config)
        assert again.checkpoint["channel_values"] == history[i]


@PROPS
@given(ans=answers)
async def test_property17_graph_history_matches_stock_and_resumes_from_any_checkpoint(pool, saver, ans):
    stock = AsyncPostgresSaver(pool)
    ours_cfg, stock_cfg = cfg(f"p17g-{uuid.uuid4()}"), cfg(f"p17s-{uuid.uuid4()}")
    graph, ref = build_grading_graph(saver), build_grading_graph(stock)
    final = await graph.ainvoke({}, ours_cfg, context=_ctx(ans))
    await ref.ainvoke({}, stock_cfg, context=_ctx(ans))
    ours = [s async for s in graph.aget_state_history(ours_cfg)]
    theirs = [s async for s in ref.aget_state_history(stock_cfg)]
    assert [(s.metadata["step"], s.values, s.next) for s in ours] == [
        (s.metadata["step"], s.values, s.next) for s in theirs
    ]
    # Resume from every historical checkpoint: each replays to the same final state.
    for snap in ours:
        if not snap.next:
            continue
        resumed = await graph.ainvoke(None, snap.config, context=_ctx(ans))
        assert resumed == final, snap.next


async def test_resume_from_old_checkpoint_skips_nothing_already_graded(saver):
    calls: list[str] = []

    async def on_grade(qid: str, grade: Any) -> None:
        calls.append(qid)

    graph = build_grading_graph(saver, on_grade=on_grade)
    conf = cfg(f"old-{uuid.uuid4()}")
    final = await graph.ainvoke({}, conf, context=_ctx({"c": "a"}))
    assert sorted(calls) == ["c", "n", "t0", "t1"]
    history = [s async for s in graph.aget_state_history(conf)]
    fan_out = next(s for s in history if "grade_question" in s.next)
    calls.clear()
    forked = await graph.ainvoke(None, fan_out.config, context=_ctx({"c": "a"}))
    assert forked == final and sorted(calls) == ["c", "n", "t0", "t1"]  # that point had no grades yet
    after_grading = next(s for s in history if s.next == ("aggregate",))
    calls.clear()
    assert await graph.ainvoke(None, after_grading.config, context=_ctx({"c": "a"})) == final
    assert calls == []


@PROPS
@given(failures=st.integers(0, 5), op=st.sampled_from(["aput", "aput_writes", "put"]))
async def test_property18_failing_write_retried_three_times_then_error(pool, saver, failures, op):
    thread = f"p18-{uuid.uuid4()}"
    (cid,) = checkpoint_ids(1)
    pool.failures = 0
    if op == "aput_writes":
        await saver.aput(cfg(thread), make_checkpoint(cid, {"v": "x"}, {"v": 1}), META, {"v": 1})
    pool.fail_next = failures

    async def write() -> None:
        cp = make_checkpoint(cid, {"v": "x" * 900}, {"v": 1})
        if op == "aput":
            await saver.aput(cfg(thread), cp, META, {"v": 1})
        elif op == "put":  # sync form, from another thread
            await asyncio.to_thread(saver.put, cfg(thread), cp, META, {"v": 1})
        else:
            await saver.aput_writes(cfg(thread, cid), [("v", "y" * 900)], task_id="t")

    if failures >= 3:
        with pytest.raises(CheckpointWriteError) as info:
            await write()
        assert pool.failures == 3  # exactly three tries
        assert isinstance(info.value.cause, psycopg.OperationalError)
        assert info.value.attempts == 3 and info.value.operation in ("aput", "aput_writes")
    else:
        await write()
        assert pool.failures == failures
        tup = await saver.aget_tuple(cfg(thread))
        assert tup is not None
        if op == "aput_writes":
            assert tup.pending_writes == [("t", "v", "y" * 900)]
    pool.fail_next = 0


async def test_graph_run_surfaces_checkpoint_write_error(pool, saver):
    async def db_goes_down(qid: str, grade: Any) -> None:
        pool.fail_next = 10_000  # the task's pending writes now fail to store

    with pytest.raises(CheckpointWriteError):
        await build_grading_graph(saver, on_grade=db_goes_down).ainvoke(
            {}, cfg(f"fail-{uuid.uuid4()}"), context=_ctx({})
        )
    assert pool.failures >= 3
    pool.fail_next = 0


async def test_load_resume_point(pool, saver):
    assert await load_resume_point(saver, f"none-{uuid.uuid4()}") is None
    thread = f"rp-{uuid.uuid4()}"

    async def crash(qid: str, grade: Any) -> None:
        if qid == "t1":
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        await build_grading_graph(saver, on_grade=crash).ainvoke({}, cfg(thread), context=_ctx({}))
    point = await load_resume_point(saver, thread)
    assert point is not None and point.pending_writes >= 3
    assert point.config["configurable"]["checkpoint_id"] == point.checkpoint_id
    out = await build_grading_graph(saver).ainvoke(None, cfg(thread), context=_ctx({}))
    assert out["status"] in ("graded", "needs_review")

    async with pool.connection() as conn:
        await conn.execute("UPDATE checkpoint_blobs SET blob = %s WHERE thread_id = %s", (b"\xc1 not msgpack", thread))
    with pytest.raises(CorruptCheckpointError) as info:
        await load_resume_point(saver, thread)
    assert info.value.thread_id == thread and info.value.reason


async def test_strict_msgpack_mode_round_trips_graph_state(pool, caplog):
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from agents.checkpointer import make_serde

    strict = GradeflowSaver(pool, serde=make_serde(inner=JsonPlusSerializer(allowed_msgpack_modules=None)))
    thread = f"strict-{uuid.uuid4()}"

    async def crash(qid: str, grade: Any) -> None:
        if qid == "t0":
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        await build_grading_graph(strict, on_grade=crash).ainvoke({}, cfg(thread), context=_ctx({"c": "a"}))
    out = await build_grading_graph(strict).ainvoke(None, cfg(thread), context=_ctx({"c": "a"}))
    assert set(out["grades"]) == {"c", "n", "t0", "t1"} and out["total"] == 1
    assert "blocked" not in caplog.text.lower()


async def test_load_resume_point_db_error_is_not_corruption(pool, saver):
    pool.fail_next = 1
    with pytest.raises(psycopg.OperationalError):
        await load_resume_point(saver, "whatever")
