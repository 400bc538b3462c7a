"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

import statistics


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
