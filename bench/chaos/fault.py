"""The frame a fault function works in: the run's options, the processes, the fault instants.

:class:`Fault` gives the fault functions of :mod:`bench.chaos.scenarios` what they need to act at the
right moment (``next_wave``: grades just came back; ``retried_agent_running``: a retried agent attempt
runs; ``under_way``: gradings are in progress), to kill a platform process or stop a server, and to
record each fault instant (:func:`bench.chaos.snapshots.snapshot_fault`) for the re-grading check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.chaos.load import Http, Load
from bench.chaos.services import Platform, RestartableStack
from bench.chaos.snapshots import NOW_SQL, Db, FaultSnapshot, GraderLog, snapshot_fault

REPO_ROOT = Path(__file__).resolve().parents[2]
TRIGGER_TIMEOUT = 120.0
"""Longest wait for gradings to be under way before a fault is injected."""
ORCHESTRATION_REKILL = 4.0
"""Seconds after the orchestration worker's restart at which it is killed again."""
RELAY_DOWN = 3.0
"""Seconds the relay stays down after its first kill of a round (a backlog of events builds up)."""
AGENT_ACTIVITY = "run_grading_agent"
"""Temporal activity type of the grading agent."""
PROBE_EVERY = 5.0
"""Seconds between two probe snapshots (checkpoint lag)."""
OUTBOX_DRAIN_TIMEOUT = 90.0
"""Longest wait, after settling, for the tenant's outbox to have nothing pending."""


@dataclass
class Options:
    """Knobs of a run (command-line options)."""

    n: int = 20
    q: int = 20
    grade_delay: float = 3.0
    burst: int = 10
    post_interval: float = 0.5
    post_retry: float = 240.0
    heartbeat_timeout: float = 10.0
    settle_timeout: float = 240.0
    kills: int = 6
    redis_short: float = 30.0
    redis_long: float = 90.0
    pg_down: float = 5.0
    temporal_down: float = 5.0
    checkpoint_lag: float = 2.0
    storm_keys: int = 10
    storm_copies: int = 8
    log_level: str = "WARNING"


@dataclass
class Fault:
    """What a fault function works with: the processes, the truth, and the record of fault instants."""

    name: str
    stack: RestartableStack
    platform: Platform
    db: Db
    tenant: str
    opts: Options
    http: Http
    exam_id: str
    load: Load
    log: Callable[[str], None]
    grader_log: GraderLog
    """The scenario's grader log (``GRADEFLOW_TEST_GRADER_LOG``): one line per grade, as it comes back."""
    t0: float = field(default_factory=time.monotonic)
    snaps: list[FaultSnapshot] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    extra_accepted: list[str] = field(default_factory=list)
    store_down: list[tuple[float, float]] = field(default_factory=list)
    """Unix times (start, end) of each PostgreSQL outage: no grade can reach its checkpoint inside one."""

    def mark(self, what: str) -> None:
        """Add ``what`` to the scenario's timeline (seconds since the scenario started)."""
        self.timeline.append({"t": round(time.monotonic() - self.t0, 1), "event": what})
        self.log(f"{self.name}: {what}")

    async def under_way(self, min_new_calls: int = 1, timeout: float = TRIGGER_TIMEOUT) -> bool:
        """Wait until ``min_new_calls`` more grades came back (grader log lines) and some submission is grading."""
        start = len(self.grader_log.calls())
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            statuses = await self.db.statuses(self.tenant) or {}
            busy = {"queued", "grading"} & set(statuses.values())
            if len(self.grader_log.calls()) - start >= min_new_calls and "grading" in busy:
                return True
            if self.load.finished and not busy:
                self.mark("no grading left to interrupt: the load is done")
                return False
            await asyncio.sleep(0.2)
        self.mark(f"no grading under way within {timeout:.0f}s")
        return False

    async def next_wave(self, timeout: float = TRIGGER_TIMEOUT) -> bool:
        """Return as soon as new questions come back (a grading's answers are being recorded).

        Watches the grader log every 20 ms (a line is written at each grader call, ``grade_delay`` s
        before the grade is back in the agent and its checkpoint write starts) and returns once that
        grade is back, so a kill right after it lands while that grading's grades are returned
        but possibly not yet checkpointed: the worst moment. ``False`` when nothing is left to grade
        or ``timeout`` passes.
        """
        start, polls = self.grader_log.size(), 0
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.grader_log.size() > start:
                # The worker logs a call before its GRADEFLOW_DEMO_GRADER_DELAY_SECONDS sleep: the grade is back
                # in the agent (and its checkpoint write starts) grade_delay s after its line.
                calls = self.grader_log.calls()
                if calls:
                    await asyncio.sleep(max(0.0, calls[-1].at + self.opts.grade_delay - time.time()))
                return True
            polls += 1
            if polls % 50 == 0 and self.load.finished:
                statuses = await self.db.statuses(self.tenant) or {}
                if not {"queued", "grading"} & set(statuses.values()):
                    self.mark("no grading left to interrupt: the load is done")
                    return False
            await asyncio.sleep(0.02)
        self.mark(f"no grading came back within {timeout:.0f}s")
        return False

    async def retried_agent_running(self, timeout: float = TRIGGER_TIMEOUT) -> bool:
        """Wait until a retried grading-agent attempt (attempt ≥ 2) runs on the live cognitive worker.

        Asks Temporal for the pending activities of the gradings in progress; an attempt counts once
        the current worker (identity ``<pid>@host``) has started it, not while the dead one still holds it.
        """
        from temporalio.api.enums.v1 import PendingActivityState
        from temporalio.client import Client

        client = await Client.connect(self.stack.temporal_address)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid = self.platform.pids().get("worker-cognitive")
            statuses = await self.db.statuses(self.tenant) or {}
            for sid in [s for s, status in statuses.items() if status == "grading"]:
                try:
                    desc = await client.get_workflow_handle(f"grade-{sid}").describe()
                except Exception:  # noqa: BLE001 - a workflow closing meanwhile; look at the others
                    continue
                for act in desc.raw_description.pending_activities:
                    if (act.activity_type.name == AGENT_ACTIVITY and act.attempt >= 2
                            and act.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                            and act.last_worker_identity.startswith(f"{pid}@")):
                        return True
            if self.load.finished and not {"queued", "grading"} & set(statuses.values()):
                self.mark("no retried grading to interrupt: everything is settled")
                return False
            await asyncio.sleep(0.5)
        self.mark(f"no retried grading attempt ran within {timeout:.0f}s")
        return False

    async def snapshot(self, label: str, wall: float | None = None) -> FaultSnapshot:
        """Record the state at this fault instant (unix time ``wall``, default now; PostgreSQL must be up)."""
        snap = await snapshot_fault(self.db.admin_url, self.tenant, label, wall=wall)
        self.snaps.append(snap)
        return snap

    async def probe(self, stop: asyncio.Event) -> None:
        """Until ``stop``: every ``PROBE_EVERY`` s record a ``probe`` snapshot (skipped while PostgreSQL is down).

        Probes feed only the checkpoint-lag check: grades returned more than ``checkpoint_lag`` s
        before a probe (and since the instant before it) must be in their checkpoint by then.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_EVERY)
            if stop.is_set():
                return
            try:
                self.snaps.append(await snapshot_fault(self.db.admin_url, self.tenant, "probe", kind="probe"))
            except (psycopg.Error, OSError):
                continue

    async def before_outage(self, label: str) -> None:
        """Snapshot, then re-read the clock so the instant is the last moment before the outage."""
        snap = await self.snapshot(label)
        snap.wall = time.time()
        snap.at = (await self.db.fetch(NOW_SQL))[0]["now"]

    async def kill(self, process: str, label: str, *, respawn: bool = True) -> None:
        """SIGKILL a platform process, snapshot the state it left, start it again (unless ``respawn`` is off)."""
        pid = self.platform.kill(process)
        snap = await self.snapshot(label, wall=time.time())  # the process is dead and reaped: no line after this
        snap.killed = process
        if respawn:
            self.mark(f"{label}: SIGKILL pid {pid}; restarted as pid {self.platform.respawn(process)}")
        else:
            self.mark(f"{label}: SIGKILL pid {pid}; left down")

    async def outage(self, service: str, seconds: float) -> None:
        """Stop a server for ``seconds`` (the load and the prober go on), then start it on the same port."""
        await self.before_outage(f"{service} down {seconds:g}s")
        down = time.time()
        await asyncio.to_thread(self.stack.stop_service, service)
        self.mark(f"{service} stopped")
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.stack.start_service, service)
        if service == "postgres":
            self.store_down.append((down, time.time()))
        self.mark(f"{service} back after {seconds:g}s")


FaultFn = Callable[[Fault], Awaitable[None]]


async def until(condition: Callable[[], bool], timeout: float = TRIGGER_TIMEOUT) -> bool:
    """Wait (bounded) until ``condition()`` holds; tell whether it did."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return False


async def poll(read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], *, timeout: float,
               every: float) -> bool:
    """Call ``read()`` every ``every`` s until ``ok(value)`` or ``timeout``; tell whether it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok(await read()):
            return True
        await asyncio.sleep(every)
    return False
