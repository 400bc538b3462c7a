"""Live progress throttle on a real Redis: leading edge at once, a burst coalesced into one trailing message."""

from __future__ import annotations

import asyncio
import json
import uuid

from infra.cache import keys
from infra.events.live import ProgressThrottle


async def _messages(pubsub, seconds: float) -> list[dict]:
    got: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            got.append(json.loads(message["data"]))
    return got


async def test_a_burst_is_one_leading_and_one_trailing_message_then_a_flush_goes_out_at_once(pools) -> None:
    tenant, submission = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    pubsub = pools.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(tenant))
    try:
        feed = ProgressThrottle(pools.redis, tenant_id=tenant, submission_id=submission, exam_id="e1",
                                interval=0.5)
        for done in range(1, 6):  # five steps within the interval
            await feed.update({"questions_done": done, "graded_questions": [f"q{i}" for i in range(done)]})
        leading = await _messages(pubsub, 0.3)  # before the interval ends: only the first step
        trailing = await _messages(pubsub, 0.6)  # after it: the latest step, once
        await feed.update({"questions_done": 6, "finished": True}, flush=True)
        flushed = await _messages(pubsub, 0.2)
        await feed.close()
        quiet = await _messages(pubsub, 0.7)
    finally:
        await pubsub.aclose()
    assert [m["data"]["questions_done"] for m in leading] == [1]
    assert [m["data"]["questions_done"] for m in trailing] == [5]
    assert trailing[0]["data"]["graded_questions"] == ["q0", "q1", "q2", "q3", "q4"]
    assert [m["data"]["questions_done"] for m in flushed] == [6]  # not held back by the interval
    assert quiet == []
    assert {(m["type"], m["submission_id"], m["exam_id"]) for m in leading + trailing + flushed} == {
        ("grading.progress", submission, "e1")}


async def test_a_flush_cancels_the_pending_trailing_message(pools) -> None:
    tenant, submission = f"t-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    pubsub = pools.redis.pubsub()
    await pubsub.subscribe(keys.events_channel(tenant))
    try:
        feed = ProgressThrottle(pools.redis, tenant_id=tenant, submission_id=submission, exam_id=None,
                                interval=0.4)
        await feed.update({"questions_done": 1})
        await feed.update({"questions_done": 2})  # pending trailing message
        await feed.update({"questions_done": 3, "finished": True}, flush=True)
        got = await _messages(pubsub, 0.8)
    finally:
        await pubsub.aclose()
    assert [m["data"]["questions_done"] for m in got] == [1, 3]
