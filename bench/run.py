"""``make bench``: run both benchmarks on a fresh embedded stack, write JSON, print a table.

Environment knobs: ``BENCH_N`` (submissions / workflows, default 40), ``BENCH_C`` (concurrency,
default 8), ``BENCH_ROUNDS`` (measured e2e rounds, each followed by a bare-Temporal round; default
2), ``BENCH_CP_WARMUP`` / ``BENCH_CP_MEASURED`` (checkpointer invocations, default 5 / 40),
``BENCH_PARTS`` (comma list of ``checkpointer``, ``e2e``, ``retention``; default all), ``BENCH_RETENTION_N``
(submissions graded for the retention part when e2e did not run; default 20), ``BENCH_KEEP=1`` (keep the
stack's data and the platform logs). Output: ``bench/results/<UTC timestamp>.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_DB = "bench_checkpoint"
RETENTION_DB = "bench_retention"
TARGETS = {"e2e_ratio_vs_bare_temporal": ">= 0.6", "checkpoint_bytes_ratio": "<= 0.25",
           "checkpoint_time_ratio": "<= 0.9", "checkpoint_retained_ratio": "<= 0.05"}

_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress line with the elapsed time."""
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _database_url(admin_url, name)


async def _run_parts(stack: Any, work_dir: Path, parts: set[str], n: int, c: int,
                     report: dict[str, Any]) -> None:
    await _run_checkpointer_and_e2e(stack, work_dir, parts, n, c, report)
    if "retention" in parts:
        await _run_retention(stack, report)
    else:
        report["notes"].append("retention bench skipped (BENCH_PARTS)")


async def _run_retention(stack: Any, report: dict[str, Any]) -> None:
    """Checkpoint bytes retained per final submission: on the e2e's submissions, else graded here."""
    from bench.retention import grade_standalone, measure_retention
    from infra.db.migrate import migrate
    from infra.settings import Settings

    settings = Settings()
    hours = {"retention_hours": settings.checkpoint_retention_hours,
             "delete_after_hours": settings.checkpoint_delete_after_hours}
    try:
        if (report.get("e2e") or {}).get("ours"):
            say("retention: on the submissions the e2e part graded through the platform")
            from infra.stack.devserver import ensure_database

            out = await measure_retention(ensure_database(stack.database_admin_url), log=say, **hours)
            out["source"] = "e2e submissions (real platform)"
        else:
            url = _create_database(stack.database_admin_url, RETENTION_DB)
            await migrate(url, app_password=settings.app_db_password, log=lambda m: None)
            await grade_standalone(url, n=_env_int("BENCH_RETENTION_N", 20), log=say)
            out = await measure_retention(url, log=say, **hours)
            out["source"] = "grading graph + GradeflowSaver, no Temporal (e2e did not run)"
    except Exception as exc:  # noqa: BLE001 - reported as a note, never as a number
        report["notes"].append(f"retention bench failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return
    report["retention"] = out
    report["checkpoint_retained_ratio"] = out["checkpoint_retained_ratio"]


async def _run_checkpointer_and_e2e(stack: Any, work_dir: Path, parts: set[str], n: int, c: int,
                                    report: dict[str, Any]) -> None:
    notes: list[str] = report["notes"]
    if "checkpointer" in parts:
        from bench.checkpointer import run_checkpointer_bench

        say("checkpointer bench: GradeflowSaver + context vs stock AsyncPostgresSaver + naive state")
        cp = await run_checkpointer_bench(
            _create_database(stack.database_admin_url, CHECKPOINT_DB),
            warmup=_env_int("BENCH_CP_WARMUP", 5), measured=_env_int("BENCH_CP_MEASURED", 40), log=say)
        report["checkpointer"] = cp
        report["checkpoint_bytes_ratio"] = cp["checkpoint_bytes_ratio"]
        report["checkpoint_time_ratio"] = cp["checkpoint_time_ratio"]
    else:
        notes.append("checkpointer bench skipped (BENCH_PARTS)")
    if "e2e" not in parts:
        notes.append("e2e bench skipped (BENCH_PARTS)")
        return
    from bench.bare_temporal import run_bare_temporal
    from bench.e2e import PlatformMissing, check_platform, run_e2e

    rounds = _env_int("BENCH_ROUNDS", 2)
    stack_pids = {name: proc.pid for name, proc in getattr(stack, "_procs", [])}
    bare_runs: list[dict[str, Any]] = []

    async def bare(label: str) -> None:
        say(f"bare temporal reference ({label}): {n} workflows at concurrency {c}")
        out = await run_bare_temporal(stack.temporal_address, n=n, concurrency=c, stack_pids=stack_pids, log=say)
        say(f"bare temporal ({label}): {out['throughput_per_s']:.2f} workflows/s, "
            f"p50 {out['latency_p50_ms']:.0f} ms, p95 {out['latency_p95_ms']:.0f} ms")
        bare_runs.append(out)
        report["e2e"]["bare_temporal_runs"] = bare_runs
        report["e2e"]["bare_temporal"] = _pool_bare(bare_runs)

    await bare("before")
    try:
        check_platform()
    except PlatformMissing as exc:
        notes.append(f"e2e (ours) not run: the pipeline has not landed: {exc}")
        say(f"e2e: skipped: {exc}")
        return
    from infra.db.migrate import app_url_from_admin, migrate
    from infra.settings import Settings
    from infra.stack.devserver import ensure_database

    admin_url = ensure_database(stack.database_admin_url)
    app_password = Settings().app_db_password
    await migrate(admin_url, app_password=app_password, log=lambda m: say(f"migrate: {m}"))
    say(f"e2e: {rounds} round(s) of {n} submissions at concurrency {c} through the API, "
        "each followed by a bare-Temporal round")

    async def after_round(r: int) -> None:
        await bare(f"after round {r + 1}")

    try:
        ours = await run_e2e(database_url=app_url_from_admin(admin_url, app_password), admin_url=admin_url,
                             redis_url=stack.redis_url, temporal_address=stack.temporal_address,
                             work_dir=work_dir, n=n, concurrency=c, rounds=rounds, stack_pids=stack_pids,
                             after_round=after_round, log=say)
    except Exception as exc:  # noqa: BLE001 - reported as a note, never as a number
        notes.append(f"e2e (ours) failed: {type(exc).__name__}: {exc}")
        say(f"e2e: FAILED: {exc}")
        traceback.print_exc()
        report["_keep_work_dir"] = True
        return
    report["e2e"]["ours"] = ours
    say(f"e2e: {ours['throughput_per_s']:.2f} submissions/s, p50 {ours['latency_p50_ms']:.0f} ms, "
        f"p95 {ours['latency_p95_ms']:.0f} ms")
    reference = report["e2e"]["bare_temporal"]
    report["e2e_ratio_vs_bare_temporal"] = round(ours["throughput_per_s"] / reference["throughput_per_s"], 4)


def _pool_bare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The bare reference over all its runs: throughput = workflows ÷ summed wall time."""
    completed = sum(r["completed"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    return {
        "runs": len(runs),
        "completed": completed,
        "wall_s": round(wall, 3),
        "throughput_per_s": round(completed / wall, 3),
        "throughput_per_run": [r["throughput_per_s"] for r in runs],
        "latency_p50_ms": round(sum(r["latency_p50_ms"] for r in runs) / len(runs), 1),
        "latency_p95_ms": round(sum(r["latency_p95_ms"] for r in runs) / len(runs), 1),
        "latency_note": "p50/p95 are the means of the runs' percentiles",
        "activities_per_workflow": runs[0]["activities_per_workflow"],
        "shape": runs[0]["shape"],
        "history": runs[0].get("history"),
        "cpu_ms_per_item_total": [r.get("cpu", {}).get("cpu_ms_per_item_total") for r in runs],
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3g}{unit}" if abs(value) < 10 else f"{value:,.0f}{unit}"
    return f"{value:,}{unit}"


def table(report: dict[str, Any]) -> str:
    """The markdown summary of one report."""
    e2e = report.get("e2e") or {}
    ours, bare = e2e.get("ours") or {}, e2e.get("bare_temporal") or {}
    cp = report.get("checkpointer") or {}
    ret = report.get("retention") or {}
    cpo, cpr = (cp.get("variants") or {}).get("ours") or {}, (cp.get("variants") or {}).get("reference") or {}
    n, c = report["params"]["n"], report["params"]["concurrency"]
    rows = [
        ("metric", "ours", "reference", "ours ÷ ref", "target"),
        ("---", "---:", "---:", "---:", "---"),
        (f"e2e throughput, graded/s (N={n}, C={c})", _fmt(ours.get("throughput_per_s")),
         _fmt(bare.get("throughput_per_s")), _fmt(report.get("e2e_ratio_vs_bare_temporal")), "≥ 0.6"),
        ("e2e latency p50 / p95, ms", f"{_fmt(ours.get('latency_p50_ms'))} / {_fmt(ours.get('latency_p95_ms'))}",
         f"{_fmt(bare.get('latency_p50_ms'))} / {_fmt(bare.get('latency_p95_ms'))}", "", ""),
        ("checkpoint bytes / submission", _fmt(cpo.get("bytes_per_submission")),
         _fmt(cpr.get("bytes_per_submission")), _fmt(report.get("checkpoint_bytes_ratio")), "≤ 0.25"),
        ("  (as stored, after PG TOAST)", _fmt(cpo.get("stored_bytes_per_submission")),
         _fmt(cpr.get("stored_bytes_per_submission")), _fmt(cp.get("checkpoint_stored_bytes_ratio")), ""),
        ("graph invocation median / p95, ms",
         f"{_fmt(cpo.get('time_median_ms'))} / {_fmt(cpo.get('time_p95_ms'))}",
         f"{_fmt(cpr.get('time_median_ms'))} / {_fmt(cpr.get('time_p95_ms'))}",
         _fmt(report.get("checkpoint_time_ratio")), "≤ 0.9"),
        ("  (paired per round, median of ours÷ref)", "", "", _fmt(cp.get("checkpoint_time_ratio_paired_median")), ""),
        ("checkpoint bytes retained / final submission", _fmt(ret.get("retained_bytes_per_submission_median")),
         _fmt(ret.get("written_bytes_per_submission_median")), _fmt(report.get("checkpoint_retained_ratio")),
         "≤ 0.05"),
    ]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append("e2e reference: bare Temporal workflow, same server, same N and C, "
                 f"{bare.get('activities_per_workflow', 'n/a')} no-op activities. "
                 "Checkpoint reference: stock AsyncPostgresSaver, questions+answers in the state. "
                 "Retention reference: bytes written grading the same submission (retained after pruning to "
                 "the last checkpoint; 0 after the delete setting).")
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def main() -> int:
    """Run the benchmarks; return the exit code (1 if a part crashed)."""
    from infra.stack.embedded import EmbeddedStack, free_port

    n, c = _env_int("BENCH_N", 40), _env_int("BENCH_C", 8)
    parts = {p.strip() for p in os.environ.get("BENCH_PARTS", "checkpointer,e2e,retention").split(",") if p.strip()}
    started_at = datetime.now(UTC)
    report: dict[str, Any] = {
        "timestamp": started_at.isoformat(timespec="seconds"),
        "e2e_ratio_vs_bare_temporal": None,
        "checkpoint_bytes_ratio": None,
        "checkpoint_time_ratio": None,
        "checkpoint_retained_ratio": None,
        "targets": TARGETS,
        "params": {"n": n, "concurrency": c, "rounds": _env_int("BENCH_ROUNDS", 2), "parts": sorted(parts)},
        "machine": machine_info(),
        "stack": {"kind": "embedded (infra.stack.embedded.EmbeddedStack)", "durable": False,
                  "note": "durable=False: PostgreSQL fsync/synchronous_commit/full_page_writes off, "
                          "Redis without AOF; the Temporal dev server (SQLite, WAL) is the same either way"},
        "e2e": {"ours": None, "bare_temporal": None},
        "checkpointer": None,
        "notes": [],
    }
    work_dir = Path(tempfile.mkdtemp(prefix="gradeflow-bench-"))
    say(f"N={n} C={c} parts={','.join(sorted(parts))}; starting the embedded stack in {work_dir}")
    stack = EmbeddedStack(work_dir / "stack", free_port(), free_port(), free_port(), free_port(),
                          durable=False, log=lambda m: say(f"stack: {m}"))
    code = 0
    try:
        stack.start()
        asyncio.run(_run_parts(stack, work_dir, parts, n, c, report))
    except Exception as exc:  # noqa: BLE001 - the report still gets written, with the reason
        traceback.print_exc()
        report["notes"].append(f"bench crashed: {type(exc).__name__}: {exc}")
        report["_keep_work_dir"] = True
        code = 1
    finally:
        stack.stop()
    keep = report.pop("_keep_work_dir", False) or os.environ.get("BENCH_KEEP") == "1"
    if keep:
        report["notes"].append(f"work dir kept: {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - _T0, 1)
    report["machine"]["loadavg_at_end"] = _loadavg()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {out.relative_to(ROOT)}")
    print()
    print(table(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
