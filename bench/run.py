"""``make bench``: run both benchmarks on a fresh embedded stack, write JSON, print a table.

Environment knobs: ``BENCH_N`` (submissions / workflows, default 40), ``BENCH_C`` (concurrency,
default 8), ``BENCH_ROUNDS`` (measured e2e rounds, each followed by a bare-Temporal round; default
2), ``BENCH_CP_WARMUP`` / ``BENCH_CP_MEASURED`` (checkpointer invocations, default 5 / 40),
``BENCH_PARTS`` (comma list of ``checkpointer``, ``e2e``, ``scale``, ``retention``, ``export``; default all),
``BENCH_RETENTION_N`` (submissions graded for the retention part when e2e did not run; default 20),
``BENCH_API_CPU`` (API CPU probes after the e2e rounds, ``C:N`` pairs; default ``1:12,32:64``; empty: none),
``BENCH_SCALE_Q`` / ``BENCH_SCALE_N`` / ``BENCH_SCALE_WORKERS`` (the scale part: questions per exam,
submissions per run, cognitive worker counts; default 200 / 16 / ``1,2``), ``BENCH_EXPORT_N`` /
``BENCH_EXPORT_Q`` / ``BENCH_EXPORT_ROUNDS`` (the gradebook export part, :mod:`bench.export`; default
100000 / 10 / 3), ``BENCH_KEEP=1`` (keep the
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
TARGETS = {"e2e_ratio_vs_bare_temporal": ">= 0.8", "e2e_ratio_vs_plugin_peer": ">= 1.0",
           "scale_ratio_vs_plugin_peer": ">= 2.0", "first_submission_ratio": "<= 1.5",
           "api_cpu_ratio_c32_vs_c1": "<= 1.2", "checkpoint_bytes_ratio": "<= 0.25",
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
    if "scale" in parts:
        from bench.scale import run_scale

        await run_scale(stack, work_dir, c, report, log=say)
    else:
        report["notes"].append("scale bench skipped (BENCH_PARTS)")
    if "retention" in parts:
        await _run_retention(stack, report)
    else:
        report["notes"].append("retention bench skipped (BENCH_PARTS)")
    if "export" in parts:
        await _run_export(stack, work_dir, report)
    else:
        report["notes"].append("export bench skipped (BENCH_PARTS)")


async def _run_export(stack: Any, work_dir: Path, report: dict[str, Any]) -> None:
    """Gradebook export of 100k submissions through the API beside COPY of the same rows."""
    from bench.export import EXPORT_DB, run_export

    try:
        out = await run_export(admin_url=_create_database(stack.database_admin_url, EXPORT_DB),
                               redis_url=stack.redis_url, temporal_address=stack.temporal_address,
                               work_dir=work_dir, log=say)
    except Exception as exc:  # noqa: BLE001 - reported as a note, never as a number
        report["notes"].append(f"export bench failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return
    report["export"] = out
    report["export_ratio_vs_copy"] = out["export_ratio_vs_copy"]


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
    from bench.e2e import PlatformMissing, check_platform, run_e2e
    from bench.scale import References, api_cpu_probe, stack_process_ids

    rounds = _env_int("BENCH_ROUNDS", 2)
    stack_pids = stack_process_ids(stack)
    refs = References(stack.temporal_address, n=n, concurrency=c, questions=20, stack_pids=stack_pids,
                      report=report["e2e"], log=say)

    async def bare(label: str) -> None:
        await refs.run(label)

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
                             after_round=after_round, api_cpu_probe=api_cpu_probe(), log=say)
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
    peer = report["e2e"].get("plugin_peer")
    if peer:
        report["e2e_ratio_vs_plugin_peer"] = round(ours["throughput_per_s"] / peer["throughput_per_s"], 4)
    first = ours.get("first_submission") or {}
    report["first_submission_ratio"] = first.get("post_ratio_vs_c1_p50", first.get("post_ratio_vs_p50"))
    report["api_cpu_ratio_c32_vs_c1"] = ours.get("api_cpu_ratio_high_vs_low_c")


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
         _fmt(bare.get("throughput_per_s")), _fmt(report.get("e2e_ratio_vs_bare_temporal")), "≥ 0.8"),
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
    lines.extend(_peer_lines(report))
    lines.append("")
    lines.append("e2e reference: bare Temporal workflow, same server, same N and C, "
                 f"{bare.get('activities_per_workflow', 'n/a')} no-op activities. "
                 "Checkpoint reference: stock AsyncPostgresSaver, questions+answers in the state. "
                 "Retention reference: bytes written grading the same submission (retained after pruning to "
                 "the last checkpoint; 0 after the delete setting).")
    if report.get("export"):
        from bench.export import table as export_table

        lines += ["", export_table(report["export"])]
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def _peer_lines(report: dict[str, Any]) -> list[str]:
    """Gradeflow beside the LangGraph-plugin peer and bare Temporal, at 20 and at the scale's questions."""
    from bench.scale import cpu_table

    e2e, scale = report.get("e2e") or {}, report.get("scale") or {}
    ours, peer, bare = e2e.get("ours") or {}, e2e.get("plugin_peer") or {}, e2e.get("bare_temporal") or {}
    first = ours.get("first_submission") or {}
    probe = ours.get("api_cpu_by_concurrency") or {}
    sq, sp, sb = scale.get("ours") or {}, scale.get("plugin_peer") or {}, scale.get("bare_temporal") or {}
    q = scale.get("questions", "n/a")
    rows = [
        ("metric", "value", "target"), ("---", "---:", "---"),
        ("20 q: gradeflow ÷ LangGraph plugin peer (throughput)", _fmt(report.get("e2e_ratio_vs_plugin_peer")), "≥ 1.0"),
        ("20 q: gradeflow ÷ bare Temporal (throughput)", _fmt(report.get("e2e_ratio_vs_bare_temporal")), "≥ 0.8"),
        ("20 q: graded/s gradeflow / peer / bare",
         f"{_fmt(ours.get('throughput_per_s'))} / {_fmt(peer.get('throughput_per_s'))} / "
         f"{_fmt(bare.get('throughput_per_s'))}", ""),
        ("20 q: p50 ms gradeflow / peer / bare",
         f"{_fmt(ours.get('latency_p50_ms'))} / {_fmt(peer.get('latency_p50_ms'))} / "
         f"{_fmt(bare.get('latency_p50_ms'))}", ""),
    ]
    for k, fig in sorted(sq.items()):
        rows.append((f"{q} q, {k} cognitive worker(s): gradeflow ÷ peer / ÷ bare",
                     f"{_fmt(scale.get(f'ratio_vs_plugin_peer_{k}w'))} / "
                     f"{_fmt(scale.get(f'ratio_vs_bare_temporal_{k}w'))}", "≥ 2.0 vs peer"))
        rows.append((f"{q} q, {k} cognitive worker(s): graded/s, p50 ms",
                     f"{_fmt(fig.get('throughput_per_s'))}, {_fmt(fig.get('latency_p50_ms'))}", ""))
    rows.append((f"{q} q: peer / bare graded/s",
                 f"{_fmt(sp.get('throughput_per_s'))} / {_fmt(sb.get('throughput_per_s'))}", ""))
    rows.append(("first submission after start: POST ms ÷ steady POST p50 (at C; at C=1)",
                 f"{_fmt(first.get('post_ratio_vs_p50'))}; {_fmt(first.get('post_ratio_vs_c1_p50'))} "
                 f"({_fmt(first.get('post_ms'))} ms)", "≤ 1.5"))
    rows.append(("first submission after start: latency ÷ steady p50",
                 f"{_fmt(first.get('latency_ratio_vs_p50'))} ({_fmt(first.get('latency_ms'))} ms)", ""))
    probe_text = ", ".join(f"C={c}: {_fmt(v.get('api_cpu_ms_per_submission'))} ms" for c, v in probe.items())
    rows.append(("API CPU per submission, high C ÷ C=1",
                 f"{_fmt(report.get('api_cpu_ratio_c32_vs_c1'))} ({probe_text or 'n/a'})", "≤ 1.2"))
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "CPU ms per submission by process (embedded services shared), history of one workflow:", ""]
    cpu_rows: list[tuple[str, dict[str, Any] | None]] = [
        ("gradeflow, 20 q", ours), ("plugin peer, 20 q", peer), ("bare Temporal, 20 q", bare)]
    cpu_rows += [(f"gradeflow, {q} q, {k} worker(s)", fig) for k, fig in sorted(sq.items())]
    cpu_rows += [(f"plugin peer, {q} q", sp), (f"bare Temporal, {q} q", sb)]
    lines += cpu_table(cpu_rows)
    return lines


def main() -> int:
    """Run the benchmarks; return the exit code (1 if a part crashed)."""
    from infra.stack.embedded import EmbeddedStack, free_port

    n, c = _env_int("BENCH_N", 40), _env_int("BENCH_C", 8)
    parts = {p.strip() for p in os.environ.get("BENCH_PARTS", "checkpointer,e2e,scale,retention,export").split(",")
             if p.strip()}
    started_at = datetime.now(UTC)
    report: dict[str, Any] = {
        "timestamp": started_at.isoformat(timespec="seconds"),
        "e2e_ratio_vs_bare_temporal": None,
        "e2e_ratio_vs_plugin_peer": None,
        "scale_ratio_vs_plugin_peer": None,
        "scale_ratio_vs_bare_temporal": None,
        "first_submission_ratio": None,
        "api_cpu_ratio_c32_vs_c1": None,
        "checkpoint_bytes_ratio": None,
        "checkpoint_time_ratio": None,
        "checkpoint_retained_ratio": None,
        "export_ratio_vs_copy": None,
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
