"""The references run beside gradeflow (bare Temporal, the LangGraph-plugin peer) and the scale part.

:class:`References` runs one bare-Temporal round and one plugin-peer round at a time, on the same
Temporal server with the same N, C and exam as the gradeflow rounds they are interleaved with, and
keeps the pooled figures of each in the report. :func:`run_scale` does the same at
``BENCH_SCALE_Q`` (200) questions per submission, with gradeflow run once per cognitive worker count
(``BENCH_SCALE_WORKERS``, default ``1,2``): peer, bare, then gradeflow with 1 worker, peer, bare,
gradeflow with 2 workers, peer, bare.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def stack_process_ids(stack: Any) -> dict[str, int]:
    """PIDs of the embedded services (PostgreSQL, Redis, Temporal), whose CPU every variant shares."""
    return {name: proc.pid for name, proc in getattr(stack, "_procs", [])}


def api_cpu_probe() -> dict[int, int]:
    """``BENCH_API_CPU`` as concurrency → submissions (default C=1 ×12 and C=32 ×64)."""
    raw = os.environ.get("BENCH_API_CPU", "1:12,32:64")
    out: dict[int, int] = {}
    for pair in raw.split(","):
        if pair.strip():
            c, count = pair.split(":")
            out[int(c)] = int(count)
    return out


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A reference over all its runs: throughput = items ÷ summed wall time; CPU per item by process."""
    completed = sum(r["completed"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    cpu: dict[str, float] = {}
    for r in runs:
        for name, ms in ((r.get("cpu") or {}).get("cpu_ms_per_item") or {}).items():
            cpu[name] = cpu.get(name, 0.0) + ms * r["completed"]
    return {
        "runs": len(runs),
        "completed": completed,
        "wall_s": round(wall, 3),
        "throughput_per_s": round(completed / wall, 3),
        "throughput_per_run": [r["throughput_per_s"] for r in runs],
        "latency_p50_ms": round(sum(r["latency_p50_ms"] for r in runs) / len(runs), 1),
        "latency_p95_ms": round(sum(r["latency_p95_ms"] for r in runs) / len(runs), 1),
        "latency_note": "p50/p95 are the means of the runs' percentiles",
        "activities_per_workflow": runs[0].get("activities_per_workflow"),
        "shape": runs[0]["shape"],
        "history": runs[0].get("history"),
        "cpu_ms_per_item": {name: round(v / completed, 1) for name, v in sorted(cpu.items())} if cpu else None,
        "cpu_ms_per_item_total": round(sum(cpu.values()) / completed, 1) if cpu else None,
    }


class References:
    """Bare Temporal and the plugin peer, run in turn; pooled figures kept in ``report``."""

    def __init__(self, address: str, *, n: int, concurrency: int, questions: int, stack_pids: dict[str, int],
                 report: dict[str, Any], log: Callable[[str], None]) -> None:
        """Remember the shared parameters; ``report`` gets ``bare_temporal`` and ``plugin_peer``."""
        self.address, self.n, self.c, self.q = address, n, concurrency, questions
        self.stack_pids, self.report, self.log = stack_pids, report, log
        self.bare_runs: list[dict[str, Any]] = []
        self.peer_runs: list[dict[str, Any]] = []

    async def run(self, label: str) -> None:
        """One bare round, then one peer round (a failed peer is a note, never a number)."""
        from bench.bare_temporal import run_bare_temporal
        from bench.plugin_peer import run_plugin_peer

        self.log(f"bare temporal reference ({label}, {self.q} questions): {self.n} workflows at C={self.c}")
        out = await run_bare_temporal(self.address, n=self.n, concurrency=self.c, questions=self.q,
                                      stack_pids=self.stack_pids, log=self.log)
        self.log(f"bare temporal ({label}): {out['throughput_per_s']:.2f} workflows/s, "
                 f"p50 {out['latency_p50_ms']:.0f} ms")
        self.bare_runs.append(out)
        self.report["bare_temporal_runs"] = self.bare_runs
        self.report["bare_temporal"] = pool(self.bare_runs)
        self.log(f"LangGraph plugin peer ({label}, {self.q} questions): {self.n} submissions at C={self.c}")
        try:
            peer = await run_plugin_peer(self.address, n=self.n, concurrency=self.c, questions=self.q,
                                         stack_pids=self.stack_pids, log=self.log)
        except Exception as exc:  # noqa: BLE001 - reported as a note
            self.report.setdefault("plugin_peer_errors", []).append(f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
            return
        self.log(f"plugin peer ({label}): {peer['throughput_per_s']:.2f} submissions/s, "
                 f"p50 {peer['latency_p50_ms']:.0f} ms")
        self.peer_runs.append(peer)
        self.report["plugin_peer_runs"] = self.peer_runs
        self.report["plugin_peer"] = pool(self.peer_runs)


async def run_scale(stack: Any, work_dir: Path, concurrency: int, report: dict[str, Any], *,
                    log: Callable[[str], None]) -> None:
    """Gradeflow at ``BENCH_SCALE_Q`` questions with 1 and 2 cognitive workers, beside both references."""
    from bench.e2e import run_e2e
    from infra.db.migrate import app_url_from_admin, migrate
    from infra.settings import Settings
    from infra.stack.devserver import ensure_database

    q, n = _env_int("BENCH_SCALE_Q", 200), _env_int("BENCH_SCALE_N", 16)
    workers = [int(w) for w in os.environ.get("BENCH_SCALE_WORKERS", "1,2").split(",") if w.strip()]
    scale: dict[str, Any] = {"questions": q, "n": n, "concurrency": concurrency, "ours": {}}
    report["scale"] = scale
    refs = References(stack.temporal_address, n=n, concurrency=concurrency, questions=q,
                      stack_pids=stack_process_ids(stack), report=scale, log=log)
    admin_url = ensure_database(stack.database_admin_url)
    app_password = Settings().app_db_password
    await migrate(admin_url, app_password=app_password, log=lambda m: None)
    await refs.run("scale, before")
    for k in workers:
        log(f"scale: gradeflow, {q} questions, {k} cognitive worker(s): {n} submissions at C={concurrency}")
        try:
            ours = await run_e2e(database_url=app_url_from_admin(admin_url, app_password), admin_url=admin_url,
                                 redis_url=stack.redis_url, temporal_address=stack.temporal_address,
                                 work_dir=work_dir / f"scale-{k}", n=n, concurrency=concurrency, rounds=1,
                                 stack_pids=stack_process_ids(stack), questions=q, cognitive_workers=k, log=log)
        except Exception as exc:  # noqa: BLE001 - reported as a note, never as a number
            report["notes"].append(f"scale ({k} cognitive workers) failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            report["_keep_work_dir"] = True
            continue
        log(f"scale ({k} cognitive workers): {ours['throughput_per_s']:.2f} submissions/s, "
            f"p50 {ours['latency_p50_ms']:.0f} ms")
        scale["ours"][str(k)] = ours
        await refs.run(f"scale, after {k} worker(s)")
    peer, bare = scale.get("plugin_peer"), scale.get("bare_temporal")
    for k, ours in scale["ours"].items():
        if peer:
            scale[f"ratio_vs_plugin_peer_{k}w"] = round(ours["throughput_per_s"] / peer["throughput_per_s"], 4)
        if bare:
            scale[f"ratio_vs_bare_temporal_{k}w"] = round(ours["throughput_per_s"] / bare["throughput_per_s"], 4)
    report["scale_ratio_vs_plugin_peer"] = scale.get("ratio_vs_plugin_peer_1w")
    report["scale_ratio_vs_bare_temporal"] = scale.get("ratio_vs_bare_temporal_1w")


def cpu_table(rows: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """Markdown lines: CPU ms per submission by process, and history size, one row per variant."""
    names: list[str] = []
    for _, fig in rows:
        for name in ((fig or {}).get("cpu") or fig or {}).get("cpu_ms_per_item") or {}:
            if name not in names:
                names.append(name)
    lines = ["| variant | " + " | ".join(names) + " | total | history events / bytes |",
             "| --- |" + " ---: |" * (len(names) + 2)]
    for label, fig in rows:
        if not fig:
            continue
        cpu = (fig.get("cpu") or fig).get("cpu_ms_per_item") or {}
        total = (fig.get("cpu") or fig).get("cpu_ms_per_item_total")
        hist: dict[str, Any] = fig["history"] if isinstance(fig.get("history"), dict) else {}
        cells = [f"{cpu[n]:,.0f}" if n in cpu else "" for n in names]
        size = (f"{hist['events']} / {hist['bytes']:,}" if isinstance(hist.get("bytes"), int) else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {total if total is not None else 'n/a'} | {size} |")
    return lines
