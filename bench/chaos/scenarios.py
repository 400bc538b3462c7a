"""One function per fault; :mod:`bench.chaos.runner` wraps each in load, settling and verification.

Each function gets a :class:`bench.chaos.fault.Fault` while the load runs, waits (bounded) for the
moment its fault hurts most, injects it, records each fault instant, and returns once the fault is
over (processes restarted, servers back). :data:`SCENARIOS` lists them in the order of a full run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from bench.chaos.fault import (
    ORCHESTRATION_REKILL,
    RELAY_DOWN,
    Fault,
    FaultFn,
    Options,
    poll,
    until,
)
from bench.chaos.load import duplicate_key_storm


async def cognitive_kill(f: Fault) -> None:
    """SIGKILL the cognitive worker ``kills`` times with gradings in flight.

    The first kill lands right after grades start coming back (returned, not all checkpointed yet).
    Each later one waits for a retried agent attempt to run on the new worker (so the same gradings
    are hit attempt after attempt: a crash must not use up their retry budget), then lands either in
    the middle of that grading (odd kills) or right after its next grades come back (even kills).
    """
    delay = f.opts.grade_delay
    for i in range(f.opts.kills):
        if i == 0:
            ready = await f.next_wave()
        else:
            ready = await f.retried_agent_running() or await f.next_wave()
            if ready and i % 2 == 1:
                await asyncio.sleep(random.uniform(0.1 * delay, 0.9 * delay))
            elif ready:
                ready = await f.next_wave()
        if not ready:
            break
        await f.kill("worker-cognitive", f"SIGKILL worker-cognitive #{i + 1}")
    f.info["kills"] = len([s for s in f.snaps if s.kind == "fault"])


async def orchestration_kill(f: Fault) -> None:
    """SIGKILL the orchestration worker right after grades came back, then its successor while it catches up.

    The first kill lands while persist activities and workflow tasks are in flight; the second
    ``ORCHESTRATION_REKILL`` s after the restart, while the new worker replays histories and
    persists the backlog.
    """
    if not await f.next_wave():
        return
    await asyncio.sleep(random.uniform(0.0, 0.5))
    await f.kill("worker-orchestration", "SIGKILL worker-orchestration #1 (grades just came back)")
    await asyncio.sleep(ORCHESTRATION_REKILL)
    await f.kill("worker-orchestration", "SIGKILL worker-orchestration #2 (new worker catching up)")
    f.info["kills"] = len([s for s in f.snaps if s.kind == "fault"])


async def relay_kill(f: Fault) -> None:
    """SIGKILL the relay mid-batch, twice over.

    Each round kills the relay while submissions pour in, keeps it down ``RELAY_DOWN`` s so a backlog
    of events builds up, starts it again and kills it the moment its first XADD of the backlog shows
    in the tenant's Stream: events of that batch are then on the Stream but not marked published.
    """
    import redis.asyncio as aioredis

    from infra.cache.keys import events_stream

    redis = aioredis.Redis.from_url(f.stack.redis_url, decode_responses=True)
    mid_batch = 0
    try:
        for i in range(2):
            await until(lambda i=i: len(f.load.accepted()) >= (i + 1) * max(1, f.opts.n // 4))
            await f.kill("relay", f"SIGKILL relay #{2 * i + 1} (idle or mid-batch)", respawn=False)
            await asyncio.sleep(RELAY_DOWN)
            length = await redis.xlen(events_stream(f.tenant))
            f.platform.respawn("relay")
            grew = await poll(lambda: redis.xlen(events_stream(f.tenant)), lambda n, length=length: n > length,
                               timeout=60.0, every=0.01)
            await f.kill("relay", f"SIGKILL relay #{2 * i + 2} (first XADD of a backlog seen: {grew})")
            mid_batch += await _published_not_marked(f)
    finally:
        await redis.aclose()
    f.info["kills"] = len([s for s in f.snaps if s.kind == "fault"])
    f.info["events_on_stream_not_marked_at_kills"] = mid_batch


async def _published_not_marked(f: Fault) -> int:
    """Events already in the Stream whose outbox row is still pending: the kill landed mid-batch."""
    import redis.asyncio as aioredis

    from infra.cache.keys import events_stream

    pending = {r["event_id"] for r in await f.db.fetch(
        "SELECT event_id::text AS event_id FROM event_outbox WHERE tenant_id = %s AND status = 'pending'",
        (f.tenant,))}
    redis = aioredis.Redis.from_url(f.stack.redis_url, decode_responses=True)
    try:
        tail = await redis.xrevrange(events_stream(f.tenant), count=200)
    finally:
        await redis.aclose()
    return len({fields.get("event_id") for _id, fields in tail} & pending)


def redis_down(seconds_of: Callable[[Options], float]) -> FaultFn:
    """A fault function: Redis down for ``seconds_of(opts)`` seconds while gradings run."""
    async def fault(f: Fault) -> None:
        if await f.under_way(min_new_calls=f.opts.q):
            await f.outage("redis", seconds_of(f.opts))
    return fault


async def postgres_restart(f: Fault) -> None:
    """PostgreSQL fast shutdown while gradings run, down ``pg_down`` s, started again on the same data."""
    if await f.under_way(min_new_calls=f.opts.q):
        await f.outage("postgres", f.opts.pg_down)


async def temporal_restart(f: Fault) -> None:
    """The Temporal dev server stopped while gradings run, down ``temporal_down`` s, started on its SQLite file."""
    if await f.under_way(min_new_calls=f.opts.q):
        await f.outage("temporal", f.opts.temporal_down)


async def duplicate_keys(f: Fault) -> None:
    """Duplicate-key storms on the intake while the load runs (see :func:`bench.chaos.load.duplicate_key_storm`)."""
    await until(lambda: bool(f.load.accepted()))
    f.mark(f"storm: {f.opts.storm_keys} keys and {f.opts.storm_keys} external ids × {f.opts.storm_copies} copies")
    storm = await duplicate_key_storm(f.http, f.exam_id, f.load.questions, keys=f.opts.storm_keys,
                                      copies=f.opts.storm_copies, retry_for=f.opts.post_retry)
    f.extra_accepted += storm.pop("accepted_ids")
    f.info["storm"] = storm
    f.mark(f"storm done: {storm}")


SCENARIOS: dict[str, FaultFn] = {
    "duplicate_keys": duplicate_keys,
    "cognitive_kill": cognitive_kill,
    "orchestration_kill": orchestration_kill,
    "relay_kill": relay_kill,
    "redis_down_short": redis_down(lambda o: o.redis_short),
    "redis_down_long": redis_down(lambda o: o.redis_long),
    "postgres_restart": postgres_restart,
    "temporal_restart": temporal_restart,
}
"""Every scenario, in the order a full run takes them."""
