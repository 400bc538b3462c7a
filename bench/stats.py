"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linearly interpolated between order statistics."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(latencies: list[float], wall_seconds: float) -> dict[str, float | int]:
    """Throughput and latency figures of ``len(latencies)`` jobs finished in ``wall_seconds``."""
    return {
        "completed": len(latencies),
        "wall_s": round(wall_seconds, 3),
        "throughput_per_s": round(len(latencies) / wall_seconds, 3),
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "latency_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "latency_mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "latency_max_ms": round(max(latencies) * 1000, 1),
    }


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process and its live children.

    Empty when psutil is missing; a process that is gone counts 0.
    """
    try:
        import psutil
    except ImportError:
        return {}
    out: dict[str, float] = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    times = p.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        out[name] = total
    return out


def cpu_report(before: dict[str, float], after: dict[str, float], *, items: int, wall_s: float,
               cpus: int) -> dict[str, object]:
    """CPU seconds per item for each process, and how busy the machine's CPUs were in total."""
    used = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    total = sum(used.values())
    return {
        "cpu_ms_per_item": {name: round(v / items * 1000, 1) for name, v in sorted(used.items())},
        "cpu_ms_per_item_total": round(total / items * 1000, 1),
        "cpu_utilisation_of_machine": round(total / (wall_s * cpus), 3) if wall_s > 0 else None,
    }


async def history_profile(client: object, workflow_id: str) -> dict[str, object]:
    """Event count and size of a workflow's history, by event type (what the Temporal server had to store).

    ``bytes`` is the serialized size of every event (protobuf), payloads included.
    """
    from collections import Counter

    handle = client.get_workflow_handle(workflow_id)  # type: ignore[attr-defined]
    history = await handle.fetch_history()
    kinds = Counter(event.WhichOneof("attributes") for event in history.events)
    return {"events": len(history.events),
            "bytes": sum(event.ByteSize() for event in history.events),
            "by_type": {k.removesuffix("_event_attributes"): v for k, v in kinds.most_common()}}


async def timed_round(one: Callable[[int], Awaitable[float]], *, n: int, concurrency: int,
                      pids: dict[str, int], progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run ``one(i)`` for ``i < n`` with at most ``concurrency`` at once; latency, throughput and CPU.

    ``one`` returns the seconds one item took; ``pids`` name the processes whose CPU is charged to the
    round (``cpu`` is left out when they cannot be read); ``progress`` is called with the items done.
    """
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def slot(i: int) -> None:
        async with gate:
            latencies.append(await one(i))
            if progress is not None:
                progress(len(latencies))

    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(n)))
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(pids)
    cpu = cpu_report(cpu_before, cpu_after, items=n, wall_s=wall, cpus=os.cpu_count() or 1) if cpu_after else None
    return {**summarize(latencies, wall), **({"cpu": cpu} if cpu else {})}
