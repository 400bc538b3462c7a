"""``make chaos`` (= ``python -m bench.chaos``): run the chaos scenarios, print a table, write JSON.

Starts PostgreSQL, Redis (append-only file, so Streams survive its restarts) and the Temporal dev
server (SQLite file) in a temporary folder, migrates, then runs each scenario with its own tenant and
its own platform processes (see :mod:`bench.chaos.runner`). Writes
``bench/results/chaos-<UTC timestamp>.json``; exits 1 when any scenario fails a check or cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.chaos.fault import Options
from bench.chaos.report import table, write_json
from bench.chaos.runner import run_scenario
from bench.chaos.scenarios import SCENARIOS
from bench.chaos.services import RestartableStack
from bench.run import RESULTS_DIR, ROOT, machine_info

QUICK = Options(n=6, q=5, burst=3, grade_delay=2.0, post_interval=0.5, post_retry=120.0, heartbeat_timeout=6.0,
                settle_timeout=150.0, kills=2, redis_short=5.0, redis_long=10.0, pg_down=2.0, temporal_down=2.0,
                storm_keys=3, storm_copies=4)
"""``--quick``: a small smoke of every scenario (a few minutes)."""
_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress line with the elapsed time."""
    print(f"[chaos {time.monotonic() - _T0:7.1f}s] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> tuple[list[str], Options, bool]:
    """Scenarios to run, the options, and whether to keep the work folder."""
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run only this scenario (repeatable; default: all, in order)")
    parser.add_argument("--quick", action="store_true", help="small smoke: presets below are replaced by "
                        + ", ".join(f"{f.name}={getattr(QUICK, f.name)}" for f in fields(Options)
                                    if getattr(QUICK, f.name) != getattr(defaults, f.name)))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (stack data, process logs)")
    help_of = {
        "n": "submissions per scenario", "q": "questions per submission",
        "grade_delay": "seconds each question's grading takes (GRADEFLOW_DEMO_GRADER_DELAY_SECONDS)",
        "burst": "submissions of the load posted at once, before the others",
        "post_interval": "seconds between two submissions of the load after the burst",
        "post_retry": "seconds a POST is retried (same key) through an outage",
        "heartbeat_timeout": "GRADEFLOW_HEARTBEAT_TIMEOUT of the platform (how soon a killed agent is retried)",
        "settle_timeout": "longest wait, after the fault, for every submission to settle",
        "kills": "SIGKILLs of the cognitive worker", "redis_short": "seconds of the short Redis outage",
        "redis_long": "seconds of the long Redis outage", "pg_down": "seconds PostgreSQL stays down",
        "temporal_down": "seconds Temporal stays down",
        "checkpoint_lag": "seconds a returned grade may take to reach its checkpoint",
        "storm_keys": "keys (and external ids) in the duplicate-key storm",
        "storm_copies": "concurrent copies of each storm request", "log_level": "platform log level",
    }
    for f in fields(Options):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)), default=None,
                            help=f"{help_of[f.name]} (default {getattr(defaults, f.name)})")
    args = parser.parse_args(argv)
    opts = QUICK if args.quick else defaults
    opts = Options(**{f.name: (getattr(args, f.name) if getattr(args, f.name) is not None
                               else getattr(opts, f.name)) for f in fields(Options)})
    return args.scenario or list(SCENARIOS), opts, args.keep


async def run_all(stack: RestartableStack, names: list[str], opts: Options, work_dir: Path) -> list[dict[str, Any]]:
    """Run the scenarios one after the other, migrating the stack's database before each."""
    from infra.db.migrate import app_url_from_admin, migrate
    from infra.settings import Settings
    from infra.stack.devserver import ensure_database

    admin_url = ensure_database(stack.database_admin_url)
    password = Settings().app_db_password
    results = []
    for name in names:
        say(f"=== {name} ===")
        await asyncio.to_thread(stack.ensure_up)
        # Every scenario runs the tree as it is now: apply migrations that landed since the last one.
        await migrate(admin_url, app_password=password, log=lambda m: say(f"migrate: {m}"))
        result = await run_scenario(name, SCENARIOS[name], stack=stack, admin_url=admin_url,
                                    app_url=app_url_from_admin(admin_url, password), work_dir=work_dir,
                                    opts=opts, log=say)
        say(f"{name}: {'PASS' if result['ok'] else 'FAIL'} in {result['duration_s']}s "
            f"({', '.join(k for k, ok in result.get('checks', {}).items() if not ok) or result.get('error', '')})")
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the suite; return the exit code."""
    from infra.stack.embedded import free_port

    names, opts, keep = parse_args(argv)
    started_at = datetime.now(UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="gradeflow-chaos-"))
    report: dict[str, Any] = {"timestamp": started_at.isoformat(timespec="seconds"), "scenarios": names,
                              "params": asdict(opts), "machine": machine_info(), "results": [], "notes": []}
    say(f"scenarios {', '.join(names)}; {opts}; work dir {work_dir}")
    stack = RestartableStack(work_dir / "stack", free_port(), free_port(), free_port(), free_port(),
                             durable=True, log=lambda m: say(f"stack: {m}"))
    code = 0
    try:
        stack.start()
        report["results"] = asyncio.run(run_all(stack, names, opts, work_dir))
    except Exception as exc:  # noqa: BLE001 - the report is still written, with the reason
        import traceback

        traceback.print_exc()
        report["notes"].append(f"run crashed: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        stack.stop(timeout=20.0)
    if not report["results"] or not all(r["ok"] for r in report["results"]):
        code = 1
    if keep:
        report["notes"].append(f"work dir kept (stack data, logs/<scenario>/*.log): {work_dir}")
    elif code:
        shutil.rmtree(work_dir / "stack", ignore_errors=True)
        report["notes"].append(f"platform logs kept: {work_dir}/logs/<scenario>/*.log")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - _T0, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = RESULTS_DIR / f"chaos-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    write_json(out, report)
    say(f"wrote {out.relative_to(ROOT)}")
    print()
    print(table(report["results"]))
    for note in report["notes"]:
        print(f"- note: {note}")
    return code


if __name__ == "__main__":
    sys.exit(main())
