"""Gradebook export benchmark: 100k submissions exported through the real API, beside ``COPY`` of the same rows.

A database of its own (``bench_export``) is migrated and seeded in SQL (``generate_series``, not
through the API): one exam of ``BENCH_EXPORT_N`` submissions (default 100000) with
``BENCH_EXPORT_Q`` graded questions each (default 10), and one of a tenth of the size. The API runs
as its own process (``gradeflow api``, as in production) and the bench downloads
``GET /v1/exams/{id}/grades.csv`` (and ``.jsonl``) over HTTP, counting rows as they arrive.

Figures: rows/s of each export (median of ``BENCH_EXPORT_ROUNDS`` rounds, default 3); the API
process's resident memory before the export and its peak during it (``VmHWM`` of
``/proc/<pid>/status``, reset before each export through ``/proc/<pid>/clear_refs``), for the small
and the big exam: an export in constant memory peaks as high at 100k rows as at 10k. Reference,
in the same run and on the same rows: ``COPY (<the export's own SELECT>) TO STDOUT (FORMAT csv)``
as the application role in the tenant's transaction (PostgreSQL writing the CSV itself, read by
psycopg); ``export_ratio_vs_copy`` = our CSV rows/s ÷ COPY rows/s.

Run alone: ``python -m bench.export`` (starts its own embedded stack; JSON in ``bench/results/``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

EXPORT_DB = "bench_export"
TENANT = "bench-export"
BIG_EXAM = "00000000-0000-4000-8000-0000000e0001"
SMALL_EXAM = "00000000-0000-4000-8000-0000000e0002"

SEED_EXAM_SQL = (
    "INSERT INTO exams (id, tenant_id, title) VALUES (%(exam)s, %(tenant)s, 'export bench')",
    """INSERT INTO questions (exam_id, question_id, tenant_id, position, type, prompt, max_points)
SELECT %(exam)s::uuid, 'q' || q, %(tenant)s, q, 'numeric', 'p', 2 FROM generate_series(1, %(q)s) AS q""",
    """INSERT INTO submissions (id, tenant_id, exam_id, student_id, external_id, status, total, max_total, workflow_id,
                         trace_id, created_at, graded_at)
SELECT md5(%(exam)s::text || i)::uuid, %(tenant)s, %(exam)s::uuid, 'student-' || i, 'lms-' || i,
       CASE WHEN i %% 10 = 0 THEN 'needs_review' ELSE 'completed' END, %(q)s + (i %% 2) * 0.5, 2 * %(q)s,
       'grade-' || i, 'trace', timestamptz '2026-01-01 00:00+00' + i * interval '1 second',
       timestamptz '2026-01-01 00:05+00' + i * interval '1 second'
  FROM generate_series(1, %(n)s) AS i""",
    """INSERT INTO grading_results (submission_id, question_id, tenant_id, score, max_points, confidence, feedback,
                             grader, rubric_version)
SELECT md5(%(exam)s::text || i)::uuid, 'q' || q, %(tenant)s, CASE WHEN q = 1 THEN 1 + (i %% 2) * 0.5 ELSE 1 END, 2,
       0.9, 'ok', 'numeric', 1
  FROM generate_series(1, %(n)s) AS i, generate_series(1, %(q)s) AS q
 ORDER BY i, q""",  # a submission's results together, as a grading writes them (one transaction each)
)
"""One exam of ``n`` submissions with ``q`` graded questions each (statements run in one transaction)."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def _proc_status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); ``False`` if not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _seed(admin_url: str, n: int, questions: int, log: Callable[[str], None]) -> float:
    started = time.monotonic()
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING", (TENANT,))
        for exam, rows in ((BIG_EXAM, n), (SMALL_EXAM, max(1, n // 10))):
            if await (await conn.execute("SELECT 1 FROM exams WHERE id = %s", (exam,))).fetchone():
                continue
            async with conn.transaction():
                for statement in SEED_EXAM_SQL:
                    await conn.execute(statement, {"exam": exam, "tenant": TENANT, "q": questions, "n": rows})
        await conn.execute("ANALYZE submissions, grading_results, questions")
    seconds = time.monotonic() - started
    log(f"export: seeded {n} + {max(1, n // 10)} submissions x {questions} questions in {seconds:.1f}s")
    return seconds


async def _download(client: httpx.AsyncClient, path: str, pid: int) -> dict[str, Any]:
    before = _proc_status(pid)
    reset = _reset_peak(pid)
    rows = size = 0
    started = time.perf_counter()
    async with client.stream("GET", path) as resp:
        resp.raise_for_status()
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            rows += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    after = _proc_status(pid)
    return {"rows": rows, "bytes": size, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
            "api_rss_before_kib": before["VmRSS"], "api_peak_rss_kib": after["VmHWM"],
            "api_peak_growth_kib": after["VmHWM"] - before["VmRSS"], "peak_reset": reset}


async def _copy(app_url: str, exam: str) -> dict[str, Any]:
    """``COPY (the export's SELECT) TO STDOUT (FORMAT csv)`` as the app role in the tenant's transaction."""
    from infra.db.pools import SET_TENANT_SQL
    from infra.stores.gradebook import EXAM_QUESTIONS_SQL, GRADEBOOK_SQL

    async with await psycopg.AsyncConnection.connect(app_url) as conn, conn.transaction():
        await conn.execute(SET_TENANT_SQL, (TENANT,))
        questions = [r[1] for r in await (await conn.execute(EXAM_QUESTIONS_SQL, (exam,))).fetchall()]
        query = f"COPY ({GRADEBOOK_SQL}) TO STDOUT (FORMAT csv, HEADER)"  # parameters bound client-side
        params = {"questions": questions, "tenant_id": TENANT, "exam_id": exam}
        size = 0
        started = time.perf_counter()
        async with conn.cursor().copy(query, params) as copy:
            async for data in copy:
                size += len(data)
        seconds = time.perf_counter() - started
    # COPY's own CSV: one line per row plus the header (no text of this data holds a newline).
    return {"bytes": size, "seconds": round(seconds, 3)}


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    best = sorted(rounds, key=lambda r: r["seconds"])[len(rounds) // 2]
    return {**best, "rounds_seconds": [r["seconds"] for r in rounds]}


def _start_api(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``gradeflow api`` as its own process (as in production), logging to ``log_path``."""
    from infra.stack.embedded import die_with_parent

    with log_path.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "infra.cli", "api"], env=env, stdout=out,  # noqa: S603
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


async def run_export(*, admin_url: str, redis_url: str, temporal_address: str, work_dir: Path,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Seed, start the API, export (CSV, JSON Lines) and COPY the same rows; return the figures."""
    from bench.e2e import auth_headers, platform_env
    from infra.db.migrate import app_url_from_admin, migrate
    from infra.settings import Settings
    from infra.stack.devserver import stop_children, wait_http
    from infra.stack.embedded import free_port

    n, questions = _env_int("BENCH_EXPORT_N", 100_000), _env_int("BENCH_EXPORT_Q", 10)
    rounds = max(1, _env_int("BENCH_EXPORT_ROUNDS", 3))
    password = Settings().app_db_password
    await migrate(admin_url, app_password=password, log=lambda m: None)
    seed_s = await _seed(admin_url, n, questions, log)
    app_url = app_url_from_admin(admin_url, password)
    port = free_port()
    env = platform_env(database_url=app_url, admin_url=admin_url, redis_url=redis_url,
                       temporal_address=temporal_address, api_port=port, data_dir=work_dir)
    log_path = work_dir / "export-api.log"
    api = _start_api(env, log_path)
    procs = {"api": api}
    try:
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_http, f"{base}/v1/health", procs, 90.0, log_dir=None)
        headers = auth_headers(TENANT)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
            await _download(client, f"/v1/exams/{SMALL_EXAM}/grades.csv", api.pid)  # warm-up (imports, plans)
            small = await _download(client, f"/v1/exams/{SMALL_EXAM}/grades.csv", api.pid)
            csv_rounds, copy_rounds, jsonl_rounds = [], [], []
            for r in range(rounds):
                csv_rounds.append(await _download(client, f"/v1/exams/{BIG_EXAM}/grades.csv", api.pid))
                copy_rounds.append(await _copy(app_url, BIG_EXAM))
                jsonl_rounds.append(await _download(client, f"/v1/exams/{BIG_EXAM}/grades.jsonl", api.pid))
                log(f"export: round {r + 1}: csv {csv_rounds[-1]['rows_per_s']:,.0f} rows/s, "
                    f"COPY {(n + 1) / copy_rounds[-1]['seconds']:,.0f} rows/s, "
                    f"jsonl {jsonl_rounds[-1]['rows_per_s']:,.0f} rows/s, "
                    f"API peak RSS {csv_rounds[-1]['api_peak_rss_kib'] / 1024:.0f} MiB")
        if api.poll() is not None:
            raise RuntimeError(f"the API exited during the export bench (log {log_path})")
    finally:
        await asyncio.to_thread(stop_children, procs, 10.0)
    for fig in copy_rounds:
        fig["rows"] = n + 1
        fig["rows_per_s"] = round(fig["rows"] / fig["seconds"], 1)
    # Each round exports and COPYs back to back: the ratio of one round shares that moment's machine load.
    paired = sorted(o["rows_per_s"] / c["rows_per_s"] for o, c in zip(csv_rounds, copy_rounds, strict=True))
    ours, jsonl, copy = _median_round(csv_rounds), _median_round(jsonl_rounds), _median_round(copy_rounds)
    for fig in (ours, jsonl):
        assert fig["rows"] in (n + 1, n), fig  # CSV: header + n rows; JSON Lines: n rows
    return {
        "submissions": n, "questions": questions, "seed_seconds": round(seed_s, 1), "rounds": rounds,
        "csv": ours, "jsonl": jsonl, "copy_csv": copy, "small_csv": small,
        "export_ratio_vs_copy": round(paired[len(paired) // 2], 4),
        "export_ratio_vs_copy_rounds": [round(r, 4) for r in paired],
        "export_ratio_vs_copy_of_medians": round(ours["rows_per_s"] / copy["rows_per_s"], 4),
        "api_peak_growth_ratio_big_vs_small": round(
            max(1, ours["api_peak_growth_kib"]) / max(1, small["api_peak_growth_kib"]), 2),
        "note": "rows/s counts CSV lines received by an HTTP client in this process (header included); "
                "COPY: PostgreSQL's own CSV of the same SELECT, read by psycopg; peak RSS is the API process's "
                "VmHWM during one export (reset before it)",
    }


def table(fig: dict[str, Any]) -> str:
    """Markdown lines of the export figures."""
    ours, copy, jsonl, small = fig["csv"], fig["copy_csv"], fig["jsonl"], fig["small_csv"]
    mib = 1024
    rows = [
        ("metric", "value"), ("---", "---:"),
        (f"gradebook CSV export, rows/s ({fig['submissions']:,} submissions x {fig['questions']} q)",
         f"{ours['rows_per_s']:,.0f} ({ours['bytes'] / 1e6:.1f} MB in {ours['seconds']:.2f}s)"),
        ("COPY (same SELECT) TO STDOUT csv, rows/s", f"{copy['rows_per_s']:,.0f} ({copy['seconds']:.2f}s)"),
        ("export ÷ COPY (rows/s; median of the rounds' ratios)",
         f"{fig['export_ratio_vs_copy']:.2f} ({', '.join(f'{r:.2f}' for r in fig['export_ratio_vs_copy_rounds'])})"),
        ("gradebook JSON Lines export, rows/s", f"{jsonl['rows_per_s']:,.0f} ({jsonl['seconds']:.2f}s)"),
        ("API RSS before / peak during the 100k CSV export, MiB",
         f"{ours['api_rss_before_kib'] / mib:.0f} / {ours['api_peak_rss_kib'] / mib:.0f}"),
        (f"API peak RSS growth: {fig['submissions']:,} rows vs {small['rows'] - 1:,} rows, MiB",
         f"{ours['api_peak_growth_kib'] / mib:.1f} vs {small['api_peak_growth_kib'] / mib:.1f}"),
    ]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main() -> int:
    """Run the export part alone on a fresh embedded stack; write ``bench/results/export-<UTC>.json``."""
    import shutil

    from bench.run import RESULTS_DIR, _create_database, _loadavg, machine_info, say
    from infra.stack.embedded import EmbeddedStack, free_port

    started_at = datetime.now(UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="gradeflow-bench-export-"))
    stack = EmbeddedStack(work_dir / "stack", free_port(), free_port(), free_port(), free_port(),
                          durable=False, log=lambda m: say(f"stack: {m}"))
    report: dict[str, Any] = {"timestamp": started_at.isoformat(timespec="seconds"), "machine": machine_info()}
    try:
        stack.start()
        report["export"] = asyncio.run(run_export(
            admin_url=_create_database(stack.database_admin_url, EXPORT_DB), redis_url=stack.redis_url,
            temporal_address=stack.temporal_address, work_dir=work_dir, log=say))
    finally:
        stack.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    report["machine"]["loadavg_at_end"] = _loadavg()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"export-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {out}")
    print(table(report["export"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
