"""Bare-Temporal reference: a workflow of no-op activities, as many as one grading run has.

Shape of one run (23 activities with the default 20 questions): ``load`` → 20 ``question``
activities fanned out at once (the graph grades questions concurrently) → ``agent`` →
``persist``. Every activity is an async no-op, so the figures are Temporal's own cost (server,
SDK, history) at the given concurrency; the worker runs in its own process, like ours.

Run a worker: ``python -m bench.bare_temporal --address 127.0.0.1:7233 --queue bench-bare``.
Drive it: :func:`run_bare_temporal`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

FIXED_ACTIVITIES = ("load", "agent", "persist")
"""The pipeline's fixed activities (load context, run agent, persist result)."""


@dataclass
class NoopInput:
    """Input of the no-op activity."""

    step: str
    """Which step of the pipeline it stands for."""


@dataclass
class NoopOutput:
    """Output of the no-op activity."""

    step: str
    """Echo of the step."""


@dataclass
class BareInput:
    """Input of :class:`BareWorkflow`."""

    questions: int = 20
    """Per-question no-op activities fanned out between ``load`` and ``agent``."""


@dataclass
class BareOutput:
    """Output of :class:`BareWorkflow`."""

    activities: int
    """Activities executed."""


@activity.defn(name="bench_noop")
async def noop(inp: NoopInput) -> NoopOutput:
    """Do nothing."""
    return NoopOutput(inp.step)


@workflow.defn(name="BenchBareWorkflow")
class BareWorkflow:
    """No-op activities in the shape of one grading run."""

    @workflow.run
    async def run(self, inp: BareInput) -> BareOutput:
        """Run ``load``, the question fan-out, ``agent`` and ``persist``."""
        timeout = timedelta(seconds=30)
        await workflow.execute_activity(noop, NoopInput("load"), start_to_close_timeout=timeout)
        await asyncio.gather(*(
            workflow.execute_activity(noop, NoopInput(f"question-{i}"), start_to_close_timeout=timeout)
            for i in range(inp.questions)
        ))
        await workflow.execute_activity(noop, NoopInput("agent"), start_to_close_timeout=timeout)
        await workflow.execute_activity(noop, NoopInput("persist"), start_to_close_timeout=timeout)
        return BareOutput(activities=len(FIXED_ACTIVITIES) + inp.questions)


async def _serve(address: str, queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Worker(client, task_queue=queue, workflows=[BareWorkflow], activities=[noop]):
        print(f"bare worker ready on {queue}", flush=True)
        await stop.wait()


def start_worker(address: str, queue: str) -> subprocess.Popen[bytes]:
    """Start the bare worker as a child process (it dies with this process)."""
    from infra.stack.embedded import die_with_parent

    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.bare_temporal", "--address", address, "--queue", queue],
        cwd=root, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker; kill it if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run_bare_temporal(
    address: str, *, n: int, concurrency: int, questions: int = 20, warmup: int = 2,
    stack_pids: dict[str, int] | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start ``n`` bare workflows, at most ``concurrency`` at once; time each start→result.

    Returns:
        Throughput (workflows/s), latency p50/p95 (ms), wall time, counts.

    """

    from bench.stats import history_profile, timed_round

    queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
    proc = start_worker(address, queue)
    try:
        client = await Client.connect(address)

        last_id = ""

        async def one() -> float:
            nonlocal last_id
            started = time.perf_counter()
            last_id = f"bench-bare-{uuid.uuid4()}"
            await client.execute_workflow(
                BareWorkflow.run, BareInput(questions), id=last_id, task_queue=queue,
                execution_timeout=timedelta(minutes=5),
            )
            return time.perf_counter() - started

        for _ in range(warmup):
            await one()
        log(f"bare temporal: warm; running {n} workflows at concurrency {concurrency}")

        def progress(done: int) -> None:
            if done % 10 == 0:
                log(f"bare temporal: {done}/{n} done")

        round_ = await timed_round(lambda _i: one(), n=n, concurrency=concurrency,
                                   pids={**(stack_pids or {}), "bare-worker": proc.pid}, progress=progress)
        return {
            **round_,
            "activities_per_workflow": len(FIXED_ACTIVITIES) + questions,
            "shape": f"load -> {questions} parallel question no-ops -> agent -> persist",
            "warmup": warmup,
            "history": await history_profile(client, last_id),
        }
    finally:
        stop_worker(proc)


def worker_main(serve: Callable[[str, str], Coroutine[Any, Any, None]], description: str | None) -> None:
    """Command line of a reference worker process: ``--address``, ``--queue``; serves until SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.queue))


def main() -> None:
    """Run a bare worker until SIGTERM."""
    worker_main(_serve, __doc__)


if __name__ == "__main__":
    main()
