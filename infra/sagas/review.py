"""The review-override saga (ARCHITECTURE flow 4) for a submission whose grading already completed.

Steps, each with its compensation, run in order; compensations run in reverse:

1. ``update_db`` — results, total, ``review_log`` audit rows and the outbox event
   ``submission.reviewed`` in one transaction (:func:`infra.stores.review.apply_override`);
   compensation ``restore_db`` puts the previous rows back exactly (audited, guarded by the version).
2. ``invalidate_cache`` — :meth:`infra.cache.copies.Cache.invalidate` of the submission's hot copy;
   compensation ``restore_cache`` puts back the value (and TTL) captured before step 1.
3. ``notify`` — a ``submission.reviewed`` live message on the tenant's channel; compensation
   ``notify_correction`` publishes a correcting message with the restored total.

Every step and compensation is appended to a ``saga_transactions`` row: ``running`` → ``completed``,
or ``compensating`` → ``compensated``; a compensation that fails leaves the row
``needs_intervention`` with the error (the remaining compensations still run). Tests inject failures
by subclassing :class:`ReviewSagaSteps` and raising from a step or compensation. Each run is timed in
``saga_transaction_duration_seconds{saga_type,status}`` (status ``error`` when recording it failed).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from infra.cache.copies import Cache, lease_key
from infra.cache.keys import submission_key
from infra.constants import EventType, SubmissionStatus
from infra.db.pools import PoolManager
from infra.events import live
from infra.observability.metrics import SAGA_DURATION
from infra.stores import review, writer

logger = logging.getLogger(__name__)

SAGA_TYPE = "review_override"


class SagaStatus(StrEnum):
    """Status of a ``saga_transactions`` row."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    NEEDS_INTERVENTION = "needs_intervention"


class NotificationError(RuntimeError):
    """A live notification was not accepted by Redis."""


@dataclass(frozen=True)
class OverrideRequest:
    """A reviewer's post-hoc override of a completed submission."""

    tenant_id: str
    submission_id: str
    actor_id: str
    """The reviewer (token subject)."""
    overrides: dict[str, tuple[float, str | None]]
    """question_id -> (score, new feedback or ``None`` to keep it)."""
    expected_version: int
    """Submission version the overrides were validated against."""
    reason: str | None = None
    trace_id: str | None = None
    source: str = "review"
    """Score-history source: ``review``, or ``request`` when the override accepts a regrade request."""
    request_id: str | None = None
    """The regrade request the override accepts (marked ``accepted`` in step 1's transaction)."""


@dataclass
class SagaContext:
    """State shared by the steps of one saga run."""

    request: OverrideRequest
    saga_id: str
    cache_before: tuple[bytes | None, int] | None = None
    """Hot copy before the saga (``DUMP`` payload, PTTL); ``None`` when it could not be read."""
    applied: review.AppliedOverride | None = None
    """What step 1 committed."""
    error: str = ""
    """Why the saga is compensating."""
    conflict: bool = False
    """Step 1 refused the write because the submission changed."""

    @property
    def key(self) -> str:
        """Redis key of the submission's hot copy."""
        return submission_key(self.request.tenant_id, self.request.submission_id)


@dataclass(frozen=True)
class SagaStep:
    """One step with its compensation."""

    name: str
    action: Callable[[SagaContext], Awaitable[None]]
    compensation: Callable[[SagaContext], Awaitable[None]]
    atomic: bool = False
    """A failed atomic step changed nothing (one transaction), so it is not compensated itself."""


@dataclass(frozen=True)
class SagaOutcome:
    """How a saga ended."""

    saga_id: str
    status: SagaStatus
    error: str | None = None
    total: float | None = None
    """Submission total after the saga (the override's on success)."""
    failed_compensations: list[str] = field(default_factory=list)
    conflict: bool = False
    """Step 1 found the submission changed since validation (nothing was written)."""


class ReviewSagaSteps:
    """The steps and compensations of the review saga; subclass a method to inject a failure.

    Args:
        pools: pool manager (PostgreSQL with RLS, Redis).
        cache: the read-model cache whose submission entry the saga invalidates.
        writer_options: how step 1 and its compensation hold ``lock:submission:{id}`` (defaults
            when not given; see :mod:`infra.stores.writer`).

    """

    def __init__(self, pools: PoolManager, cache: Cache, *, writer_options: writer.WriterOptions | None = None) -> None:
        self.pools = pools
        self.cache = cache
        self.writer_options = writer_options or writer.WriterOptions()

    def _writer(self, ctx: SagaContext) -> Any:
        return writer.writer_for(self.pools, ctx.request.submission_id, self.writer_options,
                                 owner=f"saga:{ctx.saga_id}")

    def plan(self) -> list[SagaStep]:
        """The saga's steps in execution order."""
        return [SagaStep("update_db", self.update_db, self.restore_db, atomic=True),
                SagaStep("invalidate_cache", self.invalidate_cache, self.restore_cache),
                SagaStep("notify", self.notify, self.notify_correction)]

    async def prepare(self, ctx: SagaContext) -> None:
        """Capture the hot copy before anything changes (no side effects; a Redis error is tolerated)."""
        try:
            ctx.cache_before = await self.cache.snapshot(ctx.key)
        except Exception as exc:  # noqa: BLE001 - restore_cache then deletes instead of restoring
            logger.warning("saga %s: cannot snapshot %s: %r", ctx.saga_id, ctx.key, exc)

    async def update_db(self, ctx: SagaContext) -> None:
        """Step 1: results, total, audit and outbox event in one transaction."""
        req = ctx.request
        source: Any = req.source
        async with self._writer(ctx):
            ctx.applied = await review.apply_override(
                self.pools, req.tenant_id, req.submission_id, actor_id=req.actor_id, overrides=req.overrides,
                reason=req.reason, saga_id=ctx.saga_id, expected_version=req.expected_version, trace_id=req.trace_id,
                source=source, request_id=req.request_id)

    async def restore_db(self, ctx: SagaContext) -> None:
        """Compensation of step 1: the previous rows, exactly, with an audit of the compensation."""
        if ctx.applied is None:
            return
        req = ctx.request
        async with self._writer(ctx):
            await review.restore_override(self.pools, req.tenant_id, req.submission_id, ctx.applied,
                                          actor_id=req.actor_id, saga_id=ctx.saga_id, error=ctx.error,
                                          trace_id=req.trace_id)

    async def invalidate_cache(self, ctx: SagaContext) -> None:
        """Step 2: delete the hot copy and broadcast the invalidation."""
        await self.cache.invalidate(ctx.request.tenant_id, ctx.key)

    async def restore_cache(self, ctx: SagaContext) -> None:
        """Compensation of step 2: the hot copy as it was before the saga (deleted if unknown)."""
        await self.cache.redis.delete(lease_key(ctx.key))  # a back-fill in flight may hold the override
        if ctx.cache_before is None:
            await self.cache.delete(ctx.key)
        else:
            await self.cache.restore(ctx.key, ctx.cache_before)

    async def notify(self, ctx: SagaContext) -> None:
        """Step 3: tell the tenant's live subscribers about the override."""
        applied = ctx.applied
        data = {"status": SubmissionStatus.COMPLETED.value, "saga_id": ctx.saga_id,
                "total": applied.total_after if applied else None,
                "overrides": sorted(ctx.request.overrides)}
        await self._publish(ctx, data)

    async def notify_correction(self, ctx: SagaContext) -> None:
        """Compensation of step 3: a correcting message carrying the restored total."""
        applied = ctx.applied
        data = {"status": SubmissionStatus.COMPLETED.value, "saga_id": ctx.saga_id, "correction": True,
                "total": applied.total_before if applied else None, "reason": ctx.error}
        await self._publish(ctx, data)

    async def _publish(self, ctx: SagaContext, data: dict[str, Any]) -> None:
        ok = await live.publish(self.pools.redis, EventType.SUBMISSION_REVIEWED.value,
                                tenant_id=ctx.request.tenant_id, submission_id=ctx.request.submission_id,
                                data=data)
        if not ok:
            raise NotificationError(f"live notification of {ctx.request.submission_id} was not published")


def _error(step: str, exc: BaseException) -> str:
    return f"{step}: {type(exc).__name__}: {exc}"


class ReviewSaga:
    """Runs the review-override saga and records it in ``saga_transactions``.

    Args:
        pools: pool manager (the saga rows live in PostgreSQL).
        steps: the steps (default :class:`ReviewSagaSteps` on ``pools`` and ``cache``).
        cache: required when ``steps`` is not given.
        writer_options: lock options of the default steps.

    """

    def __init__(self, pools: PoolManager, *, steps: ReviewSagaSteps | None = None,
                 cache: Cache | None = None, writer_options: writer.WriterOptions | None = None) -> None:
        if steps is None:
            if cache is None:
                raise ValueError("ReviewSaga needs steps or a cache")
            steps = ReviewSagaSteps(pools, cache, writer_options=writer_options)
        self.pools = pools
        self.steps = steps

    async def _record(self, ctx: SagaContext, step: str, phase: str, outcome: str, *, error: str | None = None,
                      status: SagaStatus | None = None) -> None:
        entry = {"step": step, "phase": phase, "outcome": outcome, "error": error}
        await review.record_saga_step(self.pools, ctx.request.tenant_id, ctx.saga_id, entry,
                                            status=status.value if status else None, error=error)

    async def run(self, request: OverrideRequest) -> SagaOutcome:
        """Run every step; on a failure compensate what ran and report how it ended.

        Returns:
            ``completed``, ``compensated`` or ``needs_intervention`` (never raises for a step or
            compensation failure; errors recording the saga itself propagate).

        """
        started, status = time.monotonic(), "error"
        try:
            outcome = await self._run(request)
            status = outcome.status.value
            return outcome
        finally:
            SAGA_DURATION.labels(SAGA_TYPE, status).observe(time.monotonic() - started)

    async def _run(self, request: OverrideRequest) -> SagaOutcome:
        ctx = SagaContext(request, str(uuid.uuid4()))
        await self.steps.prepare(ctx)
        await review.start_saga(self.pools, request.tenant_id, ctx.saga_id, SAGA_TYPE, {
            "step": "start", "submission_id": request.submission_id, "actor_id": request.actor_id,
            "overrides": {q: {"score": s, "feedback": f} for q, (s, f) in request.overrides.items()},
            "reason": request.reason})
        done: list[SagaStep] = []
        for step in self.steps.plan():
            await self._record(ctx, step.name, "execute", "running")
            try:
                await step.action(ctx)
            except Exception as exc:  # noqa: BLE001 - every failure is compensated and recorded
                ctx.error = _error(step.name, exc)
                ctx.conflict = isinstance(exc, review.ReviewConflictError | writer.SubmissionBusyError)
                logger.warning("review saga %s failed at %s; compensating", ctx.saga_id, ctx.error)
                await self._record(ctx, step.name, "execute", "failed", error=ctx.error,
                                   status=SagaStatus.COMPENSATING)
                return await self._compensate(ctx, [*done, *([] if step.atomic else [step])])
            done.append(step)
            await self._record(ctx, step.name, "execute", "done")
        await self._record(ctx, "saga", "finish", "done", status=SagaStatus.COMPLETED)
        return SagaOutcome(ctx.saga_id, SagaStatus.COMPLETED,
                           total=ctx.applied.total_after if ctx.applied else None)

    async def _compensate(self, ctx: SagaContext, ran: Sequence[SagaStep]) -> SagaOutcome:
        failures: list[str] = []
        for step in reversed(ran):
            try:
                await step.compensation(ctx)
            except Exception as exc:  # noqa: BLE001 - recorded; the other compensations still run
                failures.append(_error(f"compensate {step.name}", exc))
                await self._record(ctx, step.name, "compensate", "failed", error=failures[-1])
                continue
            await self._record(ctx, step.name, "compensate", "done")
        total = ctx.applied.total_before if ctx.applied else None
        if failures:
            error = f"{ctx.error}; " + "; ".join(failures)
            logger.error("review saga %s needs manual intervention: %s", ctx.saga_id, error)
            await self._record(ctx, "saga", "finish", "needs_intervention", error=error,
                               status=SagaStatus.NEEDS_INTERVENTION)
            return SagaOutcome(ctx.saga_id, SagaStatus.NEEDS_INTERVENTION, error, total, failures)
        await self._record(ctx, "saga", "finish", "compensated", status=SagaStatus.COMPENSATED)
        return SagaOutcome(ctx.saga_id, SagaStatus.COMPENSATED, ctx.error, total, conflict=ctx.conflict)


def validate_overrides(results: dict[str, dict[str, Any]],
                       overrides: dict[str, tuple[float, str | None]]) -> list[dict[str, str]]:
    """Check overrides against a submission's results; return ``[{field, message}]`` (empty when valid).

    Args:
        results: question_id -> result row with ``max_points``.
        overrides: question_id -> (score, feedback).

    """
    errors = []
    for qid, (score, _) in sorted(overrides.items()):
        row = results.get(qid)
        if row is None:
            errors.append({"field": f"overrides.{qid}", "message": "no grading result for this question"})
        elif not 0 <= score <= float(row["max_points"]):
            errors.append({"field": f"overrides.{qid}.score",
                           "message": f"must be between 0 and {float(row['max_points']):g}"})
    return errors
