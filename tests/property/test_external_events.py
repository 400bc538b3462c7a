# ruff: noqa: F811 - pytest fixtures (saver, gf_settings) are imported from the shared harness
"""Property 19: an external event published on Redis reaches the waiting workflow as a signal.

For generated event types and JSON payloads, every event published with ``publish_external_event``
while a ``GradingWorkflow`` waits for review shows in its ``get_progress`` query exactly once, with
its type and payload intact and in publishing order; the stream is left with nothing pending.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.events.external import ExternalEventBridge, publish_external_event
from tests.integration.infra.events.test_external import eventually, recorded, running, waiting_grading
from tests.integration.workflows.harness import gf_settings, saver  # noqa: F401 - fixtures

SAFE_INT = 2**53
json_scalars = (st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
payloads = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
event_types = st.from_regex(r"[a-z][a-z0-9_]{0,15}(\.[a-z][a-z0-9_]{0,15}){0,2}", fullmatch=True)


@pytest.fixture
async def parked(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) -> AsyncIterator[Any]:
    """A workflow waiting in ``needs_review`` and a running bridge on a stream of this test's own."""
    stream, group = f"gf:test-external-events:{uuid.uuid4().hex}", "g"
    async with waiting_grading(temporal_client, pools, saver, gf_settings, task_queue, tenant_id) as (sid, handle):
        bridge = ExternalEventBridge(pools.redis, temporal_client, consumer_name="p19", group=group, stream=stream,
                                     block=0.2)
        async with running(bridge):
            yield {"sid": sid, "handle": handle, "stream": stream, "group": group, "bridge": bridge}


@given(events=st.lists(st.tuples(event_types, payloads), min_size=1, max_size=4))
async def test_property19_published_events_reach_the_waiting_workflow(parked, pools, tenant_id, events):
    redis, handle = pools.redis, parked["handle"]
    ids = [await publish_external_event(redis, tenant_id=tenant_id, submission_id=parked["sid"], event_type=etype,
                                        payload=payload, stream=parked["stream"])
           for etype, payload in events]

    async def arrived() -> list[dict[str, Any]] | None:
        mine = [e for e in await recorded(handle) if e.get("event_id") in ids]
        return mine if len(mine) == len(ids) else None

    mine = await eventually(arrived, what="every event recorded")
    assert [e["event_id"] for e in mine] == ids
    assert [(e["event_type"], e["payload"]) for e in mine] == [(t, p) for t, p in events]

    async def all_acked() -> bool:
        return int((await redis.xpending(parked["stream"], parked["group"]))["pending"]) == 0

    await eventually(all_acked, what="every entry acked")  # acked just after the signal
    assert parked["bridge"].stats.keys() <= {"signalled", "claimed"}
