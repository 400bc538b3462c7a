# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""The external-event bridge against real Redis, Temporal and PostgreSQL.

A bridge that dies before acking is replaced by another that claims its entries; the workflow records
each event once; events nobody can receive are acked, not retried forever; acked entries are trimmed;
``gradeflow relay`` runs the bridge beside the outbox relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client, WorkflowHandle

from infra.constants import QUERY_PROGRESS, SIGNAL_EXTERNAL_EVENT, UPDATE_REVIEW
from infra.events.external import ExternalEventBridge, publish_external_event
from infra.temporal.starter import start_grading
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    choice,
    gf_settings,
    grading_workers,
    saver,
    seed,
    text,
)
from workflows.grading import GradingOutput, ProgressView, ReviewInput

ROOT = Path(__file__).resolve().parents[4]


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 20, what: str = "") -> Any:
    """Poll ``check`` until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.1)


async def recorded(handle: WorkflowHandle) -> list[dict[str, Any]]:
    """External events shown by the workflow's ``get_progress`` query."""
    view = await handle.query(QUERY_PROGRESS, result_type=ProgressView)
    return list(view.details.get("external_events", []))


@asynccontextmanager
async def waiting_grading(client: Client, pools: Any, saver: Any, settings: Any, task_queue: str,
                          tenant_id: str) -> AsyncIterator[tuple[str, WorkflowHandle]]:
    """A grading workflow parked in ``needs_review`` (with its workers); terminated afterwards."""
    s = await seed(pools, tenant_id, [choice("q1"), text("q3")], {"q1": "a", "q3": "Photosynthesys makes glucose"})
    async with grading_workers(client, pools, saver, settings, task_queue) as cog:
        wf_id = await start_grading(client, submission_id=s.submission_id, tenant_id=tenant_id, exam_id=s.exam_id,
                                    trace_id=s.trace_id, task_queue=task_queue, cognitive_queue=cog,
                                    low_confidence_threshold=0.99)
        handle = client.get_workflow_handle(wf_id, result_type=GradingOutput)

        async def parked() -> bool:
            return (await handle.query(QUERY_PROGRESS, result_type=ProgressView)).stage == "needs_review"

        await eventually(parked, what="needs_review")
        try:
            yield s.submission_id, handle
        finally:
            with contextlib.suppress(Exception):
                await handle.terminate("test over")


@asynccontextmanager
async def running(bridge: ExternalEventBridge) -> AsyncIterator[ExternalEventBridge]:
    """Run ``bridge`` in the background until the block exits."""
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.wait_for(bridge.ready.wait(), 10)
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class UnackingBridge(ExternalEventBridge):
    """A bridge that dies between signalling and acking: it never acks."""

    async def _ack(self, entry_id: str) -> None:
        return None


def stream_name() -> str:
    return f"gf:test-external-events:{uuid.uuid4().hex}"


async def pending_count(redis: Any, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


async def signals_in_history(handle: WorkflowHandle) -> int:
    count = 0
    async for event in handle.fetch_history_events():
        if (event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
                and event.workflow_execution_signaled_event_attributes.signal_name == SIGNAL_EXTERNAL_EVENT):
            count += 1
    return count


async def test_dead_bridges_entries_are_claimed_and_recorded_once(temporal_client, pools, saver, gf_settings,
                                                                  task_queue, tenant_id):
    redis, stream, group = pools.redis, stream_name(), "g"
    async with waiting_grading(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (sid, handle):
        # Published while no bridge runs: the group, created later from the stream's start, still gets them.
        unread = await publish_external_event(redis, tenant_id=tenant_id, submission_id=sid,
                                              event_type="lms.comment", payload={"n": 1}, stream=stream)
        dead = ExternalEventBridge(redis, temporal_client, consumer_name="dead", group=group, stream=stream)
        await dead.ensure_group()
        # "dead" reads the first entry and dies before signalling.
        taken = await redis.xreadgroup(group, "dead", {stream: ">"}, count=1)
        assert taken and taken[0][1][0][0]
        # "a" signals the second one and dies before acking.
        signalled = await publish_external_event(redis, tenant_id=tenant_id, submission_id=sid,
                                                 event_type="lms.grade_hint", payload={"hint": [1, "x"]},
                                                 stream=stream)
        a = UnackingBridge(redis, temporal_client, consumer_name="a", group=group, stream=stream, claim_idle=3600)
        async with running(a):
            await eventually(lambda: asyncio.sleep(0, a.stats["signalled"] == 1), what="a signalled")
        assert await pending_count(redis, stream, group) == 2
        ids = [e.get("event_id") for e in await recorded(handle)]
        assert ids == [signalled]

        b = ExternalEventBridge(redis, temporal_client, consumer_name="b", group=group, stream=stream,
                                claim_idle=0.3, claim_interval=0.2)
        async with running(b):
            await eventually(lambda: _zero(redis, stream, group), what="pending entries claimed and acked")
        assert b.stats["claimed"] == 2 and b.stats["signalled"] == 2
        events = await recorded(handle)
        assert [e["event_id"] for e in events] == [signalled, unread]  # the duplicate was ignored
        assert events[1] == {"event_type": "lms.comment", "payload": {"n": 1}, "event_id": unread,
                             "at": events[1]["at"]}
        assert await signals_in_history(handle) == 3  # a's signal, b's duplicate, b's first delivery of unread


async def _zero(redis: Any, stream: str, group: str) -> bool:
    return await pending_count(redis, stream, group) == 0


async def test_undeliverable_events_are_acked_not_retried(temporal_client, pools, saver, gf_settings, task_queue,
                                                          tenant_id):
    redis, stream, group = pools.redis, stream_name(), "g"
    async with waiting_grading(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (sid, handle):
        await publish_external_event(redis, tenant_id=tenant_id, submission_id=str(uuid.uuid4()),
                                     event_type="unknown.workflow", payload={}, stream=stream)
        await publish_external_event(redis, tenant_id="t-other", submission_id=sid, event_type="foreign.tenant",
                                     payload={"x": 1}, stream=stream)
        await redis.xadd(stream, {"event_type": "no.ids"})
        bridge = ExternalEventBridge(redis, temporal_client, consumer_name="c", group=group, stream=stream,
                                     claim_idle=0.3, claim_interval=0.2)
        async with running(bridge):
            await eventually(lambda: asyncio.sleep(0, sum(bridge.stats.values()) >= 3), what="three outcomes")
            await handle.execute_update(UPDATE_REVIEW, ReviewInput("rev-1"))
            assert (await handle.result()).status == "completed"
            await publish_external_event(redis, tenant_id=tenant_id, submission_id=sid, event_type="too.late",
                                         payload={}, stream=stream)
            await eventually(lambda: asyncio.sleep(0, bridge.stats["not_running"] == 2), what="finished → acked")
            await asyncio.sleep(1)  # claim scans pass: nothing comes back
        assert bridge.stats == {"not_running": 2, "tenant_mismatch": 1, "malformed": 1}
        assert await pending_count(redis, stream, group) == 0
        assert await recorded(handle) == []


async def test_trim_keeps_pending_entries_only(temporal_client, pools, tenant_id):
    redis, stream, group = pools.redis, stream_name(), "g"
    bridge = ExternalEventBridge(redis, temporal_client, consumer_name="d", group=group, stream=stream)
    for n in range(5):
        await publish_external_event(redis, tenant_id=tenant_id, submission_id=f"missing-{n}", event_type="e",
                                     payload={"n": n}, stream=stream)
    await bridge.ensure_group()
    await redis.xreadgroup(group, "gone", {stream: ">"}, count=1)  # entry 0 stays pending
    await bridge.read_new()  # entries 1..4: unknown workflows, acked
    assert bridge.stats["not_running"] == 4
    await bridge.trim()
    assert await redis.xlen(stream) == 5  # the pending entry 0 holds everything after it
    await redis.xack(stream, group, (await redis.xrange(stream, count=1))[0][0])
    await bridge.trim()
    assert await redis.xlen(stream) == 1  # only the last delivered entry is kept


async def test_relay_process_runs_the_bridge(temporal_client, pools, saver, gf_settings, task_queue, tenant_id,
                                             services):
    async with waiting_grading(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (sid, handle):
        event_id = await publish_external_event(pools.redis, tenant_id=tenant_id, submission_id=sid,
                                                event_type="lms.note", payload={"via": "relay"})  # relay not up yet
        relay = await asyncio.create_subprocess_exec(sys.executable, "-m", "infra.cli", "relay", cwd=ROOT,
                                                     env=services.env(), stderr=asyncio.subprocess.PIPE)
        try:
            async def arrived() -> bool:
                return any(e.get("event_id") == event_id for e in await recorded(handle))

            await eventually(arrived, timeout=60, what="event relayed by `gradeflow relay`")
        finally:
            relay.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(relay.communicate(), 30)
        assert relay.returncode == 0, stderr.decode()[-2000:]
