# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""External events that cannot be delivered become dead letters, replayed to success through the stream.

Real Redis, Temporal and PostgreSQL: an event published for a submission whose grading workflow does
not exist yet is dead-lettered (not dropped, not retried forever); once the workflow runs, an
operator's ``gradeflow dlq replay`` puts it back on its stream with the same event id and the
workflow records it once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.constants import QUERY_PROGRESS
from infra.events.dead_letters import dead_letter_actions, list_dead_letters
from infra.events.external import ExternalEventBridge, TransientDeliveryError, publish_external_event
from infra.temporal.starter import start_grading
from tests.integration.infra.events.test_external import eventually, pending_count, recorded, running, stream_name
from tests.integration.workflows.harness import (  # noqa: F401 - fixtures
    choice,
    gf_settings,
    grading_workers,
    saver,
    seed,
    text,
)
from workflows.grading import GradingOutput, ProgressView

ROOT = Path(__file__).resolve().parents[4]


async def test_an_event_for_a_missing_workflow_is_dead_lettered_then_replayed_to_success(
        temporal_client, pools, saver, gf_settings, task_queue, tenant_id, services):
    redis, stream, group = pools.redis, stream_name(), "g"
    s = await seed(pools, tenant_id, [choice("q1"), text("q3")], {"q1": "a", "q3": "Photosynthesys makes glucose"})
    bridge = ExternalEventBridge(redis, temporal_client, consumer_name="dl", group=group, stream=stream,
                                 claim_idle=0.3, claim_interval=0.2, pools=pools)
    async with running(bridge):
        event_id = await publish_external_event(redis, tenant_id=tenant_id, submission_id=s.submission_id,
                                                event_type="lms.extension", payload={"days": 2}, stream=stream)
        await publish_external_event(redis, tenant_id=f"t-missing-{uuid.uuid4().hex[:8]}",
                                     submission_id=s.submission_id, event_type="nobody", payload={}, stream=stream)
        await eventually(lambda: asyncio.sleep(0, bridge.stats["dead_lettered"] + bridge.stats["dead_letter_refused"]
                                               == 2), what="dead-lettered")
        assert await pending_count(redis, stream, group) == 0  # acked: not retried forever
        [item] = await list_dead_letters(pools, tenant_id=tenant_id, kind="external_event")
        assert (item.reference_id, item.event_type, item.status, item.attempts) == (
            event_id, "lms.extension", "open", 1)
        assert item.last_error.startswith("not_running: workflow grade-") and "not found" in item.last_error
        assert item.payload["payload"] == {"days": 2} and item.payload["stream"] == stream
        assert bridge.stats["dead_letter_refused"] == 1  # an unknown tenant: nobody to show it to

        async with grading_workers(temporal_client, pools, saver, gf_settings, task_queue) as cog:
            wf_id = await start_grading(temporal_client, submission_id=s.submission_id, tenant_id=tenant_id,
                                        exam_id=s.exam_id, trace_id=s.trace_id, task_queue=task_queue,
                                        cognitive_queue=cog, low_confidence_threshold=0.99)
            handle = temporal_client.get_workflow_handle(wf_id, result_type=GradingOutput)

            async def parked() -> bool:
                return (await handle.query(QUERY_PROGRESS, result_type=ProgressView)).stage == "needs_review"

            await eventually(parked, what="needs_review")
            other = f"{tenant_id}-o"  # another tenant naming this tenant's running grading: told "not found"
            async with pools.transaction(other) as conn:
                await conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (other, other))
            await publish_external_event(redis, tenant_id=other, submission_id=s.submission_id,
                                         event_type="foreign", payload={}, stream=stream)
            [foreign] = await eventually(lambda: list_dead_letters(pools, tenant_id=other), what="foreign")
            assert foreign.last_error == f"not_running: workflow grade-{s.submission_id} is not found"
            assert bridge.stats["tenant_mismatch"] == 1
            replay = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "infra.cli", "dlq", "replay", str(item.id), "--reason",
                                 "the grading runs now", "--actor", "ops-bob"],
                cwd=ROOT, env=services.env(), capture_output=True, text=True, timeout=60)
            assert replay.returncode == 0, replay.stderr
            assert f"external event {event_id} is on its stream again" in replay.stdout
            delivered = await eventually(lambda: recorded(handle), what="replayed event delivered")
            assert [(e["event_id"], e["payload"]) for e in delivered] == [(event_id, {"days": 2})]
            await handle.terminate("test over")

    [replayed] = await list_dead_letters(pools, tenant_id=tenant_id, kind="external_event", status=None)
    assert (replayed.status, replayed.resolved_by, replayed.resolution_reason) == (
        "replayed", "ops-bob", "the grading runs now")
    [action] = await dead_letter_actions(pools, item.id, tenant_id=tenant_id)
    assert (action.action, action.actor, action.detail["event_id"]) == ("replay", "ops-bob", event_id)
    assert bridge.stats["signalled"] == 1


class UnreachableTemporal(ExternalEventBridge):
    """A bridge whose every signal fails as if Temporal were down."""

    async def _deliver_one(self, entry_id, fields):  # type: ignore[no-untyped-def]
        raise TransientDeliveryError("grade-x: UNAVAILABLE: connection refused")


async def test_an_event_that_keeps_failing_is_dead_lettered_after_the_give_up_time(temporal_client, pools,
                                                                                    tenant_id):
    redis, stream, group = pools.redis, stream_name(), "g"
    s = await seed(pools, tenant_id, [choice("q1")], {"q1": "a"})
    patient = UnreachableTemporal(redis, temporal_client, consumer_name="p", group=group, stream=stream,
                                  pools=pools, give_up_after=3600)
    await patient.ensure_group()
    event_id = await publish_external_event(redis, tenant_id=tenant_id, submission_id=s.submission_id,
                                            event_type="lms.ping", payload={}, stream=stream)
    for deliver in (patient.read_new, patient.deliver_own_pending, patient.deliver_own_pending):
        with pytest.raises(TransientDeliveryError):  # within the give-up time: kept pending, retried
            await deliver()
    assert await pending_count(redis, stream, group) == 1
    assert await list_dead_letters(pools, tenant_id=tenant_id) == []

    impatient = UnreachableTemporal(redis, temporal_client, consumer_name="p", group=group, stream=stream,
                                    pools=pools, give_up_after=0.001)
    await impatient.deliver_own_pending()
    assert await pending_count(redis, stream, group) == 0
    [item] = await list_dead_letters(pools, tenant_id=tenant_id)
    assert (item.kind, item.reference_id) == ("external_event", event_id)
    assert item.last_error.startswith("gave_up: Temporal unreachable for over")
