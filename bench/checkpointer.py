"""Checkpointer benchmark: our saver + context-passed inputs vs the stock saver + naive state.

Same graph work, same 20-question submission, same database, same process, interleaved runs:

* **ours** — ``build_grading_graph(GradeflowSaver)``; questions and answers travel in the runtime
  context, so checkpoints hold only what the graph produces; blobs are zstd-compressed.
* **reference** — the stock ``AsyncPostgresSaver`` with the naive design: a graph whose state
  also has ``questions`` and ``answers`` channels, written by the input, and whose ``Send``s carry
  each question with its answer (LangGraph's map-reduce idiom). The nodes call the very same
  supervisor / grader / aggregate / moderate code.

Extra variants split the gain: ``stock_context`` (stock saver, our graph: the context design
alone), ``stock_answers_only`` (stock saver, only the answers in the state: the most
conservative reference), ``ours_naive`` (our saver, naive graph: compression alone) and ``no_checkpointer``
(our graph without any saver: the floor of pure graph work).

Bytes per submission are read back from the checkpoint tables for the thread: logical bytes
(``octet_length`` of the checkpoint and metadata JSON and of every blob and write) and stored
bytes (``pg_column_size``, after PostgreSQL's own TOAST compression).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agents import graph as grading_graph
from agents.checkpointer import GradeflowSaver
from agents.context import GradingContext
from agents.graders import grade_with_rubric
from agents.graph import AGGREGATE, GRADE_QUESTION, MODERATE, SUPERVISOR, build_grading_graph
from agents.rubric import Question
from agents.state import GradeStatus, merge_reducer
from bench.stats import percentile
from bench.workload import answers_for, exam_questions, payload_bytes

POOL_KWARGS = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}

THREAD_BYTES_SQL = """
SELECT
  (SELECT count(*) FROM checkpoints WHERE thread_id = %(t)s) AS checkpoints,
  (SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)
     FROM checkpoints WHERE thread_id = %(t)s) AS checkpoint_bytes,
  (SELECT coalesce(sum(pg_column_size(checkpoint) + pg_column_size(metadata)), 0)
     FROM checkpoints WHERE thread_id = %(t)s) AS checkpoint_stored,
  (SELECT count(*) FROM checkpoint_blobs WHERE thread_id = %(t)s) AS blobs,
  (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %(t)s) AS blob_bytes,
  (SELECT coalesce(sum(pg_column_size(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %(t)s) AS blob_stored,
  (SELECT count(*) FROM checkpoint_writes WHERE thread_id = %(t)s) AS writes,
  (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(t)s) AS write_bytes,
  (SELECT coalesce(sum(pg_column_size(blob)), 0) FROM checkpoint_writes WHERE thread_id = %(t)s) AS write_stored
"""


class NaiveState(TypedDict, total=False):
    """The grading state of the naive design: the inputs are channels too."""

    questions: list[Question]
    answers: dict[str, Any]
    grades: Annotated[dict[str, dict], merge_reducer]
    total: float
    max_total: float
    flagged: list[str]
    status: GradeStatus


class NaiveTask(TypedDict):
    """``Send`` payload of the naive design: the question and its answer."""

    question: Question
    answer: Any


def _runtime(state: NaiveState, runtime: Runtime[GradingContext]) -> Any:
    """A stand-in runtime whose context takes its inputs from the naive state (no re-validation)."""
    questions = state.get("questions") or runtime.context.questions
    ctx = GradingContext("bench", "bench", "bench", questions=questions, answers=state["answers"])
    return SimpleNamespace(context=ctx)


def build_naive_graph(checkpointer: BaseCheckpointSaver | None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The reference graph: same nodes and edges, inputs carried in the state and the ``Send``s.

    The input is ``{"answers": ..., "questions": ...}``; without ``questions`` in the input the
    questions come from the runtime context (the "answers only in state" variant).
    """

    async def supervisor(state: NaiveState, runtime: Runtime[GradingContext]) -> dict[str, Any]:
        return await grading_graph.supervisor(state, _runtime(state, runtime))  # type: ignore[arg-type]

    def route(state: NaiveState, runtime: Runtime[GradingContext]) -> list[Send] | str:
        graded = state.get("grades") or {}
        sends = [
            Send(GRADE_QUESTION, NaiveTask(question=q, answer=state["answers"].get(q.id)))
            for q in _runtime(state, runtime).context.questions
            if q.id not in graded
        ]
        return sends or AGGREGATE

    async def grade_question(task: NaiveTask) -> dict[str, Any]:
        grade = grade_with_rubric(task["question"], task["answer"])
        return {"grades": {task["question"].id: grade.model_dump(mode="json")}}

    async def aggregate(state: NaiveState, runtime: Runtime[GradingContext]) -> dict[str, Any]:
        return await grading_graph.aggregate(state, _runtime(state, runtime))  # type: ignore[arg-type]

    async def moderate(state: NaiveState, runtime: Runtime[GradingContext]) -> dict[str, Any]:
        return await grading_graph.moderate(state, _runtime(state, runtime))  # type: ignore[arg-type]

    builder = StateGraph(NaiveState, context_schema=GradingContext)
    builder.add_node(SUPERVISOR, supervisor)
    builder.add_node(GRADE_QUESTION, grade_question)  # type: ignore[call-overload]  # Send payload input
    builder.add_node(AGGREGATE, aggregate)
    builder.add_node(MODERATE, moderate)
    builder.add_edge(START, SUPERVISOR)
    builder.add_conditional_edges(SUPERVISOR, route, [GRADE_QUESTION, AGGREGATE])
    builder.add_edge(GRADE_QUESTION, AGGREGATE)
    builder.add_edge(AGGREGATE, MODERATE)
    builder.add_edge(MODERATE, END)
    return builder.compile(checkpointer=checkpointer, name="grading-naive")


@dataclass
class Variant:
    """One way of running the same grading."""

    name: str
    graph: CompiledStateGraph[Any, Any, Any, Any]
    make_input: Callable[[], tuple[Any, GradingContext | None]]
    checkpointed: bool = True
    times: list[float] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)


async def _thread_bytes(pool: AsyncConnectionPool[Any], thread_id: str) -> dict[str, int]:
    async with pool.connection() as conn:
        row = await (await conn.execute(THREAD_BYTES_SQL, {"t": thread_id})).fetchone()
    assert row is not None
    out = {k: int(v) for k, v in dict(row).items()}
    out["total_bytes"] = out["checkpoint_bytes"] + out["blob_bytes"] + out["write_bytes"]
    out["total_stored_bytes"] = out["checkpoint_stored"] + out["blob_stored"] + out["write_stored"]
    return out


async def run_checkpointer_bench(
    conninfo: str, *, warmup: int = 5, measured: int = 30, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the benchmark on database ``conninfo`` (needs CREATE rights for the saver tables).

    Returns:
        Raw figures per variant and the ratios ``checkpoint_bytes_ratio`` and
        ``checkpoint_time_ratio`` (ours ÷ reference, medians).

    """
    questions = exam_questions()
    answers = answers_for(questions)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, min_size=2, max_size=4, kwargs=POOL_KWARGS, open=False)
    await pool.open()
    try:
        ours_saver = GradeflowSaver(pool)
        stock_saver = AsyncPostgresSaver(pool)
        await stock_saver.setup()

        def context_input() -> tuple[Any, GradingContext]:
            return {}, GradingContext("bench", "bench", "bench", questions=questions, answers=dict(answers))

        def naive_input() -> tuple[Any, GradingContext]:
            return ({"questions": list(questions), "answers": dict(answers)},
                    GradingContext("bench", "bench", "bench"))

        def answers_only_input() -> tuple[Any, GradingContext]:
            return {"answers": dict(answers)}, GradingContext("bench", "bench", "bench", questions=questions)

        variants = [
            Variant("ours", build_grading_graph(ours_saver), context_input),
            Variant("reference", build_naive_graph(stock_saver), naive_input),
            Variant("stock_context", build_grading_graph(stock_saver), context_input),
            Variant("stock_answers_only", build_naive_graph(stock_saver), answers_only_input),
            Variant("ours_naive", build_naive_graph(ours_saver), naive_input),
            Variant("no_checkpointer", build_grading_graph(None), context_input, checkpointed=False),
        ]
        log(f"checkpointer: {len(variants)} variants x ({warmup} warm-up + {measured} measured) invocations, "
            f"answers {payload_bytes(answers)} bytes")
        for i in range(warmup + measured):
            order = variants[i % len(variants):] + variants[: i % len(variants)]  # rotate: no fixed position
            for v in order:
                thread = f"bench-{v.name}-{uuid.uuid4()}"
                inp, ctx = v.make_input()
                config = {"configurable": {"thread_id": thread}}
                started = time.perf_counter()
                out = await v.graph.ainvoke(inp, config, context=ctx)  # type: ignore[call-overload]
                elapsed = time.perf_counter() - started
                if i >= warmup:
                    v.times.append(elapsed)
                    v.threads.append(thread)
                    v.results.append((out.get("total"), out.get("status"), len(out.get("grades") or {})))
            if (i + 1) % 10 == 0:
                log(f"checkpointer: {i + 1}/{warmup + measured} rounds")
        expected = variants[0].results[0]
        for v in variants:
            if any(r != expected for r in v.results):
                raise RuntimeError(f"variant {v.name} graded differently: {v.results[0]} != {expected}")

        figures: dict[str, Any] = {}
        for v in variants:
            entry: dict[str, Any] = {
                "invocations": len(v.times),
                "time_median_ms": round(statistics.median(v.times) * 1000, 3),
                "time_p95_ms": round(percentile(v.times, 0.95) * 1000, 3),
                "time_mean_ms": round(statistics.fmean(v.times) * 1000, 3),
            }
            if v.checkpointed:
                # sizes differ by a few bytes between runs (ids, timestamps): take the median run
                sizes = sorted([await _thread_bytes(pool, t) for t in v.threads], key=lambda s: s["total_bytes"])
                median = sizes[len(sizes) // 2]
                entry["bytes_per_submission"] = median["total_bytes"]
                entry["stored_bytes_per_submission"] = median["total_stored_bytes"]
                entry["bytes_min_max"] = [sizes[0]["total_bytes"], sizes[-1]["total_bytes"]]
                entry["tables"] = median
            figures[v.name] = entry
            log(f"checkpointer: {v.name:16s} median {entry['time_median_ms']:8.2f} ms  "
                f"p95 {entry['time_p95_ms']:8.2f} ms  bytes {entry.get('bytes_per_submission', '-')}")
        ours, ref = figures["ours"], figures["reference"]
        return {
            "checkpoint_bytes_ratio": round(ours["bytes_per_submission"] / ref["bytes_per_submission"], 4),
            "checkpoint_stored_bytes_ratio": round(
                ours["stored_bytes_per_submission"] / ref["stored_bytes_per_submission"], 4),
            "checkpoint_time_ratio": round(ours["time_median_ms"] / ref["time_median_ms"], 4),
            "checkpoint_time_ratio_p95": round(ours["time_p95_ms"] / ref["time_p95_ms"], 4),
            # per round (ours and reference ran back to back): robust to load drift on the machine
            "checkpoint_time_ratio_paired_median": round(statistics.median(
                o / r for o, r in zip(variants[0].times, variants[1].times, strict=True)), 4),
            "checkpoint_bytes_ratio_vs_answers_only": round(
                ours["bytes_per_submission"] / figures["stock_answers_only"]["bytes_per_submission"], 4),
            "questions": len(questions),
            "answers_bytes": payload_bytes(answers),
            "warmup": warmup,
            "measured": measured,
            "durability": "async (LangGraph default, as the activity uses)",
            "variants": figures,
        }
    finally:
        await pool.close()
