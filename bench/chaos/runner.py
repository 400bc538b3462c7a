"""Run one chaos scenario end to end: platform up, load, fault, settle, verify, everything stopped.

A scenario gets its own tenant and exam on the shared stack and a fresh set of platform processes:
start the load and a prober reading all along, run the fault function, wait (bounded) until every
submission is settled and the outbox is drained, verify (:mod:`bench.chaos.verify`). Processes that
exit on their own meanwhile are respawned, as a supervisor would, and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.chaos.fault import OUTBOX_DRAIN_TIMEOUT, REPO_ROOT, Fault, FaultFn, Options
from bench.chaos.load import Load, Prober, chaos_questions, create_exam, open_http
from bench.chaos.services import Platform, RestartableStack
from bench.chaos.snapshots import SETTLED_STATUSES, Db, GraderLog
from bench.chaos.verify import OUTBOX_PENDING_SQL, verify
from bench.e2e import platform_env
from infra.stack.embedded import free_port

SUPERVISE_EVERY = 1.0
"""Seconds between checks for platform processes that exited on their own."""
STALE_GRACE = 3.0
"""Seconds allowed, after settling and draining, for hot copies to be repaired before they are compared."""


async def _supervise(platform: Platform, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.to_thread(platform.supervise)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUPERVISE_EVERY)


async def _settle(db: Db, tenant: str, accepted: Callable[[], int], deadline: float) -> dict[str, int]:
    """Wait until every submission is settled (final or given up) or ``deadline``; return the statuses."""
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = await db.statuses(tenant)
        if statuses is not None:
            last = statuses
            if len(last) >= accepted() and all(s in SETTLED_STATUSES for s in last.values()):
                break
        await asyncio.sleep(2.0)
    counts: dict[str, int] = {}
    for status in last.values():
        counts[status] = counts.get(status, 0) + 1
    return counts


async def _drain(db: Db, tenant: str, timeout: float) -> int:
    """Wait until the tenant's outbox has nothing pending (or ``timeout``); return what is left."""
    end = time.monotonic() + timeout
    pending = -1
    while time.monotonic() < end:
        rows = await db.try_fetch(OUTBOX_PENDING_SQL, (tenant,))
        pending = int(rows[0]["n"]) if rows else -1
        if pending == 0:
            return 0
        await asyncio.sleep(2.0)
    return pending


async def _terminate_unsettled(temporal_address: str, ids: list[str]) -> int:
    """Terminate the workflows of submissions still unsettled, so they do not load the next scenario."""
    from temporalio.client import Client

    client = await Client.connect(temporal_address)
    done = 0
    for sid in ids:
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(f"grade-{sid}").terminate("chaos scenario ended")
            done += 1
    return done


def _env(stack: RestartableStack, admin_url: str, app_url: str, port: int, work_dir: Path,
         opts: Options, grader_log: Path) -> dict[str, str]:
    env = platform_env(database_url=app_url, admin_url=admin_url, redis_url=stack.redis_url,
                       temporal_address=stack.temporal_address, api_port=port, data_dir=work_dir)
    env.update(GRADEFLOW_DEMO_GRADER_DELAY_SECONDS=str(opts.grade_delay),
               GRADEFLOW_HEARTBEAT_TIMEOUT=str(opts.heartbeat_timeout),
               GRADEFLOW_SHUTDOWN_TIMEOUT="5", GRADEFLOW_LOG_LEVEL=opts.log_level,
               GRADEFLOW_TEST_GRADER_LOG=str(grader_log))
    return env


async def run_scenario(name: str, fault_fn: FaultFn, *, stack: RestartableStack, admin_url: str, app_url: str,
                       work_dir: Path, opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
    """Run scenario ``name``; return its figures, checks and timeline (``error`` if it could not run)."""
    started = time.monotonic()
    tenant = f"chaos-{name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {"scenario": name, "tenant": tenant}
    await asyncio.to_thread(stack.ensure_up)
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    log_dir = work_dir / "logs" / name
    log_dir.mkdir(parents=True, exist_ok=True)
    grader_log = GraderLog(log_dir / "grader-calls.log")  # every cognitive worker of the scenario appends to it
    platform = Platform(_env(stack, admin_url, app_url, port, work_dir, opts, grader_log.path), log_dir,
                        REPO_ROOT, api_url, log=log)
    db = Db(admin_url)
    http = open_http(api_url, tenant)
    stop_supervising, stop_probing = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    prober: Prober | None = None
    fault: Fault | None = None
    try:
        await asyncio.to_thread(platform.start)
        log(f"{name}: platform up in {time.monotonic() - started:.1f}s (pids {platform.pids()}); tenant {tenant}")
        tasks.append(asyncio.create_task(_supervise(platform, stop_supervising)))
        questions = chaos_questions(opts.q)
        exam_id = await create_exam(http, questions)
        load = Load(http, exam_id, questions, opts.n, opts.post_interval, opts.post_retry, burst=opts.burst)
        prober = Prober(http, load.accepted)
        prober.start()
        load_task = asyncio.create_task(load.run())
        tasks.append(load_task)
        fault = Fault(name, stack, platform, db, tenant, opts, http, exam_id, load, log, grader_log, t0=started)
        fault.mark("load started")
        tasks.append(asyncio.create_task(fault.probe(stop_probing)))
        await fault_fn(fault)
        fault.mark("fault over; waiting for the load and for every submission to settle")
        deadline = time.monotonic() + opts.settle_timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(load_task), max(1.0, deadline - time.monotonic()))
        counts = await _settle(db, tenant, lambda: len(load.accepted()) + len(fault.extra_accepted), deadline)
        fault.mark(f"settled: {counts}")
        left = await _drain(db, tenant, OUTBOX_DRAIN_TIMEOUT)
        fault.mark(f"outbox pending after drain wait: {left}")
        stop_probing.set()
        await asyncio.sleep(STALE_GRACE)
        await prober.stop()
        result.update(await verify(db, stack.redis_url, http, tenant, questions=opts.q, posted=load.posted,
                                   extra_accepted=fault.extra_accepted, snaps=fault.snaps,
                                   store_down=fault.store_down,
                                   lag_s=opts.checkpoint_lag, grader_log=grader_log,
                                   grade_delay=opts.grade_delay))
        storm = fault.info.get("storm")
        if storm is not None:
            result["checks"]["no_duplicates"] &= not (storm["keys_with_several_ids"] or storm["other_body_not_422"]
                                                      or storm["external_ids_with_several_ids"])
        unsettled = [sid for sid, s in (await db.statuses(tenant) or {}).items() if s not in SETTLED_STATUSES]
        if unsettled:
            result["terminated_unsettled"] = await _terminate_unsettled(stack.temporal_address, unsettled)
    except Exception as exc:  # noqa: BLE001 - recorded; the run goes on with the next scenario
        log(f"{name}: ERROR {type(exc).__name__}: {exc}")
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-3000:]
    finally:
        stop_supervising.set()
        stop_probing.set()
        if prober is not None:
            await prober.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.client.aclose()
        await asyncio.to_thread(platform.stop)
        await asyncio.to_thread(stack.ensure_up)
    if fault is not None:
        result["fault"] = {**fault.info, "timeline": fault.timeline}
    result["process_exits"] = platform.exits
    result["duration_s"] = round(time.monotonic() - started, 1)
    result["ok"] = "error" not in result and all(result.get("checks", {}).values())
    return result
