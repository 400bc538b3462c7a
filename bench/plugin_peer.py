"""Peer reference: the same grading graph run with Temporal's LangGraph plugin (``temporalio-langgraph``).

The lean port (:mod:`bench.peer_graph`): grader nodes as activities (one per question, its question
and answer in the ``Send``), supervisor / aggregate / moderate inline in the workflow, the exam and
the answers in the workflow input. No database, no cache, no API: what a team would get from the
plugin alone. The worker runs in its own process (like ours and the bare reference); the driver
starts ``n`` workflows with at most ``concurrency`` at once and times each start → result, like
:func:`bench.bare_temporal.run_bare_temporal`.

Run a worker: ``python -m bench.plugin_peer --address 127.0.0.1:7233 --queue bench-peer``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bench.peer_workflow import PEER_GRAPH, PeerGradingWorkflow, PeerInput

ROOT = Path(__file__).resolve().parent.parent


async def _serve(address: str, queue: str) -> None:
    from temporalio.langgraph import LangGraphPlugin

    from bench.peer_graph import GRAPH_NAME, build_peer_graph

    assert GRAPH_NAME == PEER_GRAPH
    plugin = LangGraphPlugin(graphs={GRAPH_NAME: build_peer_graph()})
    client = await Client.connect(address, plugins=[plugin])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=queue, workflows=[PeerGradingWorkflow]):
        print(f"plugin peer worker ready on {queue}", flush=True)
        await stop.wait()


def start_worker(address: str, queue: str) -> subprocess.Popen[bytes]:
    """Start the peer worker as a child process (it dies with this process)."""
    from infra.stack.embedded import die_with_parent

    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.plugin_peer", "--address", address, "--queue", queue],
        cwd=ROOT, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL,
    )


async def run_plugin_peer(
    address: str, *, n: int, concurrency: int, questions: int = 20, warmup: int = 2,
    stack_pids: dict[str, int] | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Grade ``n`` submissions of the bench exam through the plugin peer, at most ``concurrency`` at once.

    Returns:
        Throughput (submissions/s), latency p50/p95 (ms), wall time, CPU per submission by process,
        and the history of one workflow (events, bytes).

    """
    from bench.bare_temporal import stop_worker
    from bench.stats import history_profile, timed_round
    from bench.workload import answers_for, exam_questions

    exam = exam_questions(questions)
    exam_json = [q.model_dump(mode="json") for q in exam]
    inputs = [PeerInput(questions=exam_json, answers=answers_for(exam, seed=i)) for i in range(n + warmup)]
    queue = f"bench-peer-{uuid.uuid4().hex[:8]}"
    proc = start_worker(address, queue)
    try:
        client = await Client.connect(address)
        last_id = ""
        statuses: dict[str, int] = {}

        async def one(inp: PeerInput) -> float:
            nonlocal last_id
            started = time.perf_counter()
            last_id = f"bench-peer-{uuid.uuid4()}"
            out = await client.execute_workflow(PeerGradingWorkflow.run, inp, id=last_id, task_queue=queue,
                                                execution_timeout=timedelta(minutes=5))
            if out.graded != len(exam):
                raise RuntimeError(f"peer graded {out.graded} of {len(exam)} questions")
            statuses[out.status] = statuses.get(out.status, 0) + 1
            return time.perf_counter() - started

        for i in range(warmup):
            await one(inputs[n + i])
        statuses.clear()
        log(f"plugin peer: warm; running {n} workflows at concurrency {concurrency}")
        round_ = await timed_round(lambda i: one(inputs[i]), n=n, concurrency=concurrency,
                                   pids={**(stack_pids or {}), "peer-worker": proc.pid})
        return {
            **round_,
            "questions": questions,
            "statuses": statuses,
            "shape": "LangGraphPlugin lean port: grader node = activity per question (Send carries question "
                     "+ answer); supervisor, aggregate, moderate in the workflow; exam + answers in the input",
            "warmup": warmup,
            "history": await history_profile(client, last_id),
        }
    finally:
        stop_worker(proc)


def main() -> None:
    """Run a peer worker until SIGTERM."""
    from bench.bare_temporal import worker_main

    worker_main(_serve, __doc__)


if __name__ == "__main__":
    main()
