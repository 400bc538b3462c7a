"""Property 9: a review override's DB update, invalidation and notification succeed together or are
compensated — on real PostgreSQL and Redis, failures injected by subclassing the saga's steps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.cache.copies import Cache
from infra.cache.keys import events_channel, submission_key
from infra.sagas.review import OverrideRequest, ReviewSaga, ReviewSagaSteps, SagaContext, SagaStatus
from infra.stores import review
from infra.stores.submissions import read_submission
from tests.integration.api.test_api_review import complete_submission
from tests.integration.workflows.harness import choice, numeric, seed, text

QUESTIONS = [choice("q1", points=2.0), numeric("q2", points=3.0), text("q3")]
MAX_POINTS = {q.id: q.max_points for q in QUESTIONS}
GRADED = {"q1": 2.0, "q2": 0.0, "q3": 2.0}
STEPS = ("update_db", "invalidate_cache", "notify")


class InjectedError(RuntimeError):
    """The failure a test injects."""


class FaultySteps(ReviewSagaSteps):
    """The real steps, raising :class:`InjectedError` before or after a chosen step or compensation.

    Args:
        pools: pool manager.
        cache: cache.
        fail: ``(step, "before" | "after")`` to fail, or ``None``.
        broken: name of a compensation that raises.

    """

    def __init__(self, pools: Any, cache: Cache, fail: tuple[str, str] | None = None,
                 broken: str | None = None) -> None:
        super().__init__(pools, cache)
        self.fail = fail
        self.broken = broken

    async def _step(self, name: str, real: Any, ctx: SagaContext) -> None:
        if self.fail == (name, "before"):
            raise InjectedError(f"injected before {name}")
        await real(ctx)
        if self.fail == (name, "after"):
            raise InjectedError(f"injected after {name}")

    async def _comp(self, name: str, real: Any, ctx: SagaContext) -> None:
        if self.broken == name:
            raise InjectedError(f"injected in {name}")
        await real(ctx)

    async def update_db(self, ctx: SagaContext) -> None:  # noqa: D102
        await self._step("update_db", super().update_db, ctx)

    async def invalidate_cache(self, ctx: SagaContext) -> None:  # noqa: D102
        await self._step("invalidate_cache", super().invalidate_cache, ctx)

    async def notify(self, ctx: SagaContext) -> None:  # noqa: D102
        await self._step("notify", super().notify, ctx)

    async def restore_db(self, ctx: SagaContext) -> None:  # noqa: D102
        await self._comp("restore_db", super().restore_db, ctx)

    async def restore_cache(self, ctx: SagaContext) -> None:  # noqa: D102
        await self._comp("restore_cache", super().restore_cache, ctx)

    async def notify_correction(self, ctx: SagaContext) -> None:  # noqa: D102
        await self._comp("notify_correction", super().notify_correction, ctx)


async def completed_submission(pools: Any, tenant_id: str) -> str:
    s = await seed(pools, tenant_id, QUESTIONS, {"q1": "a", "q2": 7, "q3": "photosynthesis"})
    await complete_submission(pools, tenant_id, s.submission_id,
                              {q: (score, MAX_POINTS[q]) for q, score in GRADED.items()})
    return s.submission_id


async def db_state(pools: Any, tenant_id: str, sid: str) -> dict[str, Any]:
    async with pools.transaction(tenant_id) as conn:
        sub = await (await conn.execute("SELECT * FROM submissions WHERE id = %s", (sid,))).fetchone()
        results = await (await conn.execute(
            "SELECT * FROM grading_results WHERE submission_id = %s ORDER BY question_id", (sid,))).fetchall()
        log = await (await conn.execute(
            "SELECT action, question_id FROM review_log WHERE submission_id = %s ORDER BY id", (sid,))).fetchall()
        events = await (await conn.execute(
            "SELECT event_type, payload FROM event_outbox WHERE target_id = %s AND event_type = "
            "'submission.reviewed' ORDER BY occurred_at, event_id", (sid,))).fetchall()
    return {"submission": dict(sub), "results": [dict(r) for r in results], "log": log, "events": events}


async def cache_state(pools: Any, key: str) -> tuple[str | None, bool]:
    return await pools.redis.get(key), (await pools.redis.pttl(key)) > 0


async def drain(pubsub: Any, sid: str) -> list[dict[str, Any]]:
    out, idle = [], 0
    while idle < 3:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is None:
            idle += 1
            continue
        body = json.loads(message["data"])
        if body.get("submission_id") == sid and body.get("type") == "submission.reviewed":
            out.append(body["data"])
    return out


async def run_saga(pools: Any, steps: ReviewSagaSteps, tenant_id: str, sid: str,
                   overrides: dict[str, tuple[float, str | None]]) -> Any:
    target = await review.load_target(pools, tenant_id, sid)
    request = OverrideRequest(tenant_id, sid, "reviewer-1", overrides, target.version, reason="regrade")
    return await ReviewSaga(pools, steps=steps).run(request)


overrides_st = st.dictionaries(
    st.sampled_from(sorted(MAX_POINTS)),
    st.tuples(st.integers(0, 16), st.one_of(st.none(), st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))),
    min_size=1, max_size=3,
).map(lambda d: {q: (min(k / 4, MAX_POINTS[q]), fb) for q, (k, fb) in d.items()})
failures_st = st.sampled_from([None, ("update_db", "before"), ("invalidate_cache", "before"),
                               ("invalidate_cache", "after"), ("notify", "before"), ("notify", "after")])


@given(overrides=overrides_st, fail=failures_st, warm=st.booleans())
async def test_override_saga_is_all_or_compensated(pools, tenant_id, overrides, fail, warm) -> None:
    cache = Cache(pools.redis, ttl_seconds=600)
    sid = await completed_submission(pools, tenant_id)
    key = submission_key(tenant_id, sid)
    if warm:
        await read_submission(pools, cache, tenant_id, sid)
    before, cached_before = await db_state(pools, tenant_id, sid), await cache_state(pools, key)
    assert (cached_before[0] is not None) == warm
    pubsub = pools.redis.pubsub()
    await pubsub.subscribe(events_channel(tenant_id))
    try:
        outcome = await run_saga(pools, FaultySteps(pools, cache, fail), tenant_id, sid, overrides)
        messages = await drain(pubsub, sid)
    finally:
        await pubsub.aclose()
    after = await db_state(pools, tenant_id, sid)
    saga = await review.load_saga(pools, tenant_id, outcome.saga_id)
    assert saga["status"] == outcome.status
    executed = [(e["step"], e["outcome"]) for e in saga["steps"] if e.get("phase") == "execute"]

    if fail is None:
        assert outcome.status == SagaStatus.COMPLETED and saga["error"] is None
        assert [s for s, o in executed if o == "done"] == list(STEPS)
        results = {r["question_id"]: r for r in after["results"]}
        for qid, (score, feedback) in overrides.items():
            assert float(results[qid]["score"]) == score and results[qid]["overridden"] is True
            expected_feedback = feedback if feedback is not None else results[qid]["feedback"]
            assert results[qid]["feedback"] == expected_feedback
        untouched = {r["question_id"]: r for r in before["results"] if r["question_id"] not in overrides}
        assert all(results[q] == row for q, row in untouched.items())
        expected_total = sum(float(r["score"]) for r in after["results"])
        assert float(after["submission"]["total"]) == outcome.total == expected_total
        assert after["submission"]["version"] == before["submission"]["version"] + 1
        assert await pools.redis.get(key) is None  # invalidated
        assert [m.get("correction") for m in messages] == [None] and messages[0]["saga_id"] == outcome.saga_id
        assert [r["action"] for r in after["log"]] == ["override"] * len(overrides)
        assert [e["payload"]["saga_id"] for e in after["events"]] == [outcome.saga_id]
        return

    step, _ = fail
    assert outcome.status == SagaStatus.COMPENSATED and saga["status"] == "compensated"
    assert (step, "failed") in executed and "injected" in saga["error"]
    assert after["submission"] == before["submission"] and after["results"] == before["results"]
    assert await cache_state(pools, key) == cached_before
    compensated = [e["step"] for e in saga["steps"] if e.get("phase") == "compensate"]
    ran = list(STEPS[:STEPS.index(step) + (0 if step == "update_db" else 1)])
    assert compensated == list(reversed(ran))
    assert all(e["outcome"] == "done" for e in saga["steps"] if e.get("phase") == "compensate")
    if messages:  # whatever reached subscribers is followed by its correction
        assert messages[-1]["correction"] is True and messages[-1]["total"] == float(before["submission"]["total"])
    assert not any(m.get("correction") is None for m in messages) or fail == ("notify", "after")
    if step == "update_db":
        assert after["log"] == [] and after["events"] == []
    else:
        actions = [r["action"] for r in after["log"]]
        assert actions == ["override"] * len(overrides) + ["override_compensated"] * len(overrides)
        assert [bool(e["payload"].get("compensation")) for e in after["events"]] == [False, True]


class ConcurrentChange(FaultySteps):
    """Fails the notification after another writer moved the submission's version on."""

    async def notify(self, ctx: SagaContext) -> None:  # noqa: D102
        async with self.pools.transaction(ctx.request.tenant_id) as conn:
            await conn.execute("UPDATE submissions SET version = version + 1 WHERE id = %s",
                               (ctx.request.submission_id,))
        raise InjectedError("injected after a concurrent change")


@pytest.mark.parametrize("case", ["restore_cache raises", "restore_db meets a concurrent change"])
async def test_failed_compensation_needs_intervention(pools, tenant_id, case) -> None:
    cache = Cache(pools.redis, ttl_seconds=600)
    sid = await completed_submission(pools, tenant_id)
    await read_submission(pools, cache, tenant_id, sid)
    before = await db_state(pools, tenant_id, sid)
    if case == "restore_cache raises":
        steps: ReviewSagaSteps = FaultySteps(pools, cache, fail=("notify", "before"), broken="restore_cache")
    else:
        steps = ConcurrentChange(pools, cache)
    outcome = await run_saga(pools, steps, tenant_id, sid, {"q2": (3.0, "full marks")})
    saga = await review.load_saga(pools, tenant_id, outcome.saga_id)
    assert outcome.status == SagaStatus.NEEDS_INTERVENTION and saga["status"] == "needs_intervention"
    assert "injected" in saga["error"]
    failed = [e["step"] for e in saga["steps"] if e.get("phase") == "compensate" and e["outcome"] == "failed"]
    after = await db_state(pools, tenant_id, sid)
    if case == "restore_cache raises":
        assert failed == ["invalidate_cache"] and "compensate invalidate_cache" in saga["error"]
        # the other compensations still ran: the database is back as it was
        assert after["submission"] == before["submission"] and after["results"] == before["results"]
    else:
        assert failed == ["update_db"] and "ReviewConflictError" in saga["error"]
        assert float(after["submission"]["total"]) == 7.0  # the override stays; an operator decides
    assert outcome.failed_compensations and outcome.error == saga["error"]


async def test_saga_rows_are_tenant_scoped(pools, tenant_id) -> None:
    cache = Cache(pools.redis, ttl_seconds=600)
    sid = await completed_submission(pools, tenant_id)
    outcome = await run_saga(pools, ReviewSagaSteps(pools, cache), tenant_id, sid, {"q1": (1.0, None)})
    assert outcome.status == SagaStatus.COMPLETED
    other = f"{tenant_id}-other"
    assert await review.load_saga(pools, other, outcome.saga_id) is None
    assert await review.load_target(pools, other, sid) is None
