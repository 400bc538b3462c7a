"""External events on Redis → ``external_event`` signals of grading workflows (ARCHITECTURE property 19).

Producers call :func:`publish_external_event`, which XADDs one entry to the stream
:data:`infra.cache.keys.EXTERNAL_EVENTS_STREAM` (tenant, submission, type, JSON payload, event id). The
:class:`ExternalEventBridge` reads it with a consumer group, so nothing is lost while no bridge runs:

- ``XREADGROUP`` hands each new entry to one bridge; it signals ``grade-<submission_id>`` with an
  :class:`workflows.types.ExternalEvent` and ``XACK``s the entry only after the signal succeeded.
- Entries left pending longer than ``claim_idle`` (a bridge died between reading and acking, or the
  signal failed transiently) are taken over with ``XAUTOCLAIM`` and delivered again.
- Delivery is at least once; the workflow ignores an ``event_id`` it has already recorded.
- An event whose workflow is not running (finished, unknown), whose workflow belongs to another
  tenant, or that Temporal refuses is acked, logged, counted in :attr:`ExternalEventBridge.stats` and,
  when the bridge has ``pools``, recorded as an ``external_event`` dead letter (``dlq_items``) an
  operator can replay (:func:`republish_dead_letter` puts it back with the same event id) or discard.
  Temporal being unreachable is retried, for ``give_up_after`` seconds from the event's publication,
  then the event is dead-lettered too. An entry that cannot be parsed names no tenant: it is logged
  and dropped.
- Entries every consumer group has acked are trimmed (``XTRIM MINID``) now and then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from infra.cache.keys import EXTERNAL_EVENTS_STREAM
from infra.constants import SEARCH_ATTR_TENANT, SIGNAL_EXTERNAL_EVENT, grading_workflow_id
from infra.db.pools import PoolManager
from infra.events.dead_letters import record_dead_letter
from infra.events.failures import is_transient
from infra.events.relay import backoff_delay
from workflows.types import ExternalEvent

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "gradeflow-bridge"
TENANT_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTR_TENANT)
TRANSIENT_RPC = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED,
                           RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED, RPCStatusCode.INTERNAL,
                           RPCStatusCode.UNKNOWN})
"""Temporal answers that mean "try again later": the entry stays pending and is claimed again."""
UNDELIVERABLE = frozenset({"not_running", "tenant_mismatch", "rejected", "gave_up"})
"""Outcomes that become a dead letter (with ``pools``)."""


class TransientDeliveryError(Exception):
    """Temporal could not be reached; the entry stays pending and is delivered again later."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class ExternalEventEntry:
    """One external event as stored in the stream."""

    tenant_id: str
    """Tenant owning the submission."""
    submission_id: str
    """Submission whose grading workflow receives the event."""
    event_type: str
    """Producer's event type, e.g. ``rubric.changed``."""
    payload: dict[str, Any] = field(default_factory=dict)
    """JSON object body."""
    event_id: str = ""
    """Deduplication id (a uuid4 when the producer gives none)."""

    def to_fields(self) -> dict[str, str]:
        """Stream entry fields (the payload as strict JSON)."""
        if not isinstance(self.payload, dict):
            raise TypeError("payload must be a JSON object (dict)")
        for name in ("tenant_id", "submission_id", "event_type", "event_id"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "submission_id": self.submission_id,
                "event_type": self.event_type,
                "payload": json.dumps(self.payload, separators=(",", ":"), allow_nan=False)}

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> ExternalEventEntry:
        """Parse stream entry fields; ``ValueError`` when an entry is malformed."""
        data = {_text(k): _text(v) for k, v in fields.items()}
        try:
            payload = json.loads(data.get("payload") or "{}")
            entry = cls(data["tenant_id"], data["submission_id"], data["event_type"], payload, data["event_id"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed external event: {exc!r}") from exc
        if not isinstance(payload, dict) or not all((entry.tenant_id, entry.submission_id, entry.event_type,
                                                     entry.event_id)):
            raise ValueError("malformed external event: empty field or non-object payload")
        return entry


async def publish_external_event(redis: Redis, *, tenant_id: str, submission_id: str, event_type: str,
                                 payload: dict[str, Any], event_id: str | None = None,
                                 stream: str = EXTERNAL_EVENTS_STREAM) -> str:
    """Publish an external event for a submission's grading workflow.

    The entry stays in the stream until a bridge has signalled the workflow, so it is delivered even
    when no bridge runs at the time of publishing. Republishing with the same ``event_id`` is safe:
    the workflow records it once.

    Args:
        redis: Redis client.
        tenant_id: tenant owning the submission.
        submission_id: submission whose workflow gets the ``external_event`` signal.
        event_type: event type shown in the workflow's progress.
        payload: JSON object body (no NaN/infinity).
        event_id: deduplication id; a new uuid4 by default.
        stream: stream to add to (tests use their own).

    Returns:
        The event id.

    """
    entry = ExternalEventEntry(tenant_id, submission_id, event_type, payload, event_id or str(uuid.uuid4()))
    await redis.xadd(stream, entry.to_fields())  # type: ignore[arg-type]
    return entry.event_id


async def republish_dead_letter(redis: Redis, payload: dict[str, Any]) -> str:
    """Put a dead-lettered external event back on the stream it came from, with the same event id.

    Args:
        redis: Redis client.
        payload: the dead letter's payload (as the bridge recorded it).

    Returns:
        The new stream entry id.

    """
    entry = ExternalEventEntry(payload["tenant_id"], payload["submission_id"], payload["event_type"],
                               payload.get("payload") or {}, payload["event_id"])
    entry_id = await redis.xadd(payload.get("stream") or EXTERNAL_EVENTS_STREAM, entry.to_fields())  # type: ignore[arg-type]
    return _text(entry_id)


class ExternalEventBridge:
    """Turns stream entries into ``external_event`` signals, at least once.

    Args:
        redis: Redis client (blocking reads wait at most ``block`` seconds).
        temporal_client: Temporal client.
        consumer_name: this bridge's consumer name in the group (unique per process).
        group: consumer group shared by all bridges.
        stream: stream to read.
        batch_size: entries read or claimed per call.
        block: seconds a read waits for new entries (also the stop latency).
        claim_idle: seconds an entry stays pending before another delivery claims it.
        claim_interval: seconds between scans for stale pending entries.
        trim_interval: seconds between trims of acked entries.
        rpc_timeout: seconds for each Temporal call.
        pools: where undeliverable events become dead letters (``None``: they are only logged).
        give_up_after: seconds after its publication an event that keeps failing transiently
            (Temporal unreachable) is dead-lettered instead of retried (needs ``pools``).

    """

    def __init__(self, redis: Redis, temporal_client: Client, *, consumer_name: str, group: str = DEFAULT_GROUP,
                 stream: str = EXTERNAL_EVENTS_STREAM, batch_size: int = 50, block: float = 1.0,
                 claim_idle: float = 30.0, claim_interval: float = 5.0, trim_interval: float = 60.0,
                 rpc_timeout: float = 10.0, pools: PoolManager | None = None,
                 give_up_after: float = 900.0) -> None:
        self.redis = redis
        self.client = temporal_client
        self.consumer_name = consumer_name
        self.group = group
        self.stream = stream
        self.batch_size = batch_size
        self.block = block
        self.claim_idle = claim_idle
        self.claim_interval = claim_interval
        self.trim_interval = trim_interval
        self.rpc_timeout = timedelta(seconds=rpc_timeout)
        self.pools = pools
        self.give_up_after = give_up_after
        self.stats: Counter[str] = Counter()
        """Outcomes: signalled, not_running, tenant_mismatch, rejected, gave_up, malformed, claimed, transient,
        dead_lettered (recorded in ``dlq_items``), dead_letter_refused (its tenant does not exist)."""
        self.ready = asyncio.Event()
        """Set once the group exists and this consumer reads (tests wait on it)."""

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) from the start of the stream, if missing."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver events until ``stop`` is set; Redis or Temporal outages are retried with backoff."""
        failures = 0
        started = False
        next_claim = next_trim = 0.0
        while not stop.is_set():
            try:
                if not started:
                    await self.ensure_group()
                    await self.deliver_own_pending()
                    started = True
                    self.ready.set()
                now = time.monotonic()
                if now >= next_claim:
                    next_claim = now + self.claim_interval
                    await self.claim_stale()
                if now >= next_trim:
                    next_trim = now + self.trim_interval
                    await self.trim()
                await self.read_new()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - keep bridging; pending entries are claimed again
                failures += 1
                started = started and "NOGROUP" not in str(exc)  # stream deleted: create the group again
                delay = backoff_delay(failures, base=0.5, cap=30.0)
                logger.warning("bridge %s: %s: %s; retrying in %.1fs", self.consumer_name, type(exc).__name__,
                               exc, delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass

    async def read_new(self) -> int:
        """Read (blocking up to ``block``) and deliver new entries; return how many were read."""
        reply = await self.redis.xreadgroup(self.group, self.consumer_name, {self.stream: ">"},
                                            count=self.batch_size, block=max(1, int(self.block * 1000)))
        entries = self._entries(reply)
        await self.deliver(entries)
        return len(entries)

    async def deliver_own_pending(self) -> None:
        """Deliver entries this consumer name read before a restart but never acked (one pass)."""
        last = "0"
        while True:
            reply = await self.redis.xreadgroup(self.group, self.consumer_name, {self.stream: last},
                                                count=self.batch_size)
            entries = self._entries(reply)
            if not entries:
                return
            await self.deliver(entries)
            last = entries[-1][0]

    async def claim_stale(self) -> int:
        """Take over entries pending longer than ``claim_idle`` (any consumer) and deliver them."""
        start, claimed = "0-0", 0
        while True:
            reply = await self.redis.xautoclaim(self.stream, self.group, self.consumer_name,
                                                int(self.claim_idle * 1000), start_id=start, count=self.batch_size)
            start = _text(reply[0])
            entries = [(_text(i), f) for i, f in reply[1] if i is not None]
            if entries:
                self.stats["claimed"] += len(entries)
                logger.info("bridge %s: claimed %d stale entries", self.consumer_name, len(entries))
                await self.deliver(entries)
                claimed += len(entries)
            if start == "0-0":
                return claimed

    async def deliver(self, entries: list[tuple[str, dict[Any, Any]]]) -> None:
        """Deliver entries in order, acking each after its outcome; stop at a transient failure.

        An undeliverable event is recorded as a dead letter before it is acked; one that failed
        transiently for longer than ``give_up_after`` since its publication is dead-lettered too.
        """
        for entry_id, fields in entries:
            why = ""
            try:
                outcome, why = await self._deliver_one(entry_id, fields)
            except TransientDeliveryError as exc:
                self.stats["transient"] += 1
                if self.pools is None or time.time() - _id(entry_id)[0] / 1000 < self.give_up_after:
                    raise
                outcome, why = "gave_up", f"Temporal unreachable for over {self.give_up_after:g}s: {exc}"
            self.stats[outcome] += 1
            if outcome in UNDELIVERABLE and self.pools is not None:
                await self._dead_letter(entry_id, ExternalEventEntry.from_fields(fields or {}), outcome, why)
            await self._ack(entry_id)

    async def _dead_letter(self, entry_id: str, entry: ExternalEventEntry, outcome: str, why: str) -> None:
        """Record an undeliverable event in ``dlq_items`` (raise a transient error if PostgreSQL is down)."""
        assert self.pools is not None
        outcome = "not_running" if outcome == "tenant_mismatch" else outcome  # never tell another tenant's apart
        payload = {"event_id": entry.event_id, "tenant_id": entry.tenant_id, "submission_id": entry.submission_id,
                   "event_type": entry.event_type, "payload": entry.payload, "stream": self.stream,
                   "stream_entry_id": entry_id, "workflow_id": grading_workflow_id(entry.submission_id),
                   "outcome": outcome}
        try:
            async with self.pools.transaction(entry.tenant_id) as conn:
                item = await record_dead_letter(conn, tenant_id=entry.tenant_id, kind="external_event",
                                                reference_id=entry.event_id, error=f"{outcome}: {why}",
                                                payload=payload, event_type=entry.event_type, failure_id=entry_id)
        except psycopg.errors.IntegrityError as exc:  # the tenant does not exist: nobody to show it to
            self.stats["dead_letter_refused"] += 1
            logger.error("bridge %s: event %s names unknown tenant %s; dropped (%s)", self.consumer_name,
                         entry.event_id, entry.tenant_id, exc)
            return
        except Exception as exc:
            if is_transient(exc):
                raise TransientDeliveryError(f"cannot record dead letter of {entry.event_id}: {exc}") from exc
            raise
        self.stats["dead_lettered"] += 1
        logger.warning("bridge %s: event %s (%s) for %s dead-lettered as %d (%s)", self.consumer_name,
                       entry.event_id, entry.event_type, entry.submission_id, item, outcome)

    async def _ack(self, entry_id: str) -> None:
        await self.redis.xack(self.stream, self.group, entry_id)

    async def _deliver_one(self, entry_id: str, fields: dict[Any, Any] | None) -> tuple[str, str]:
        """Signal one entry's workflow; return the outcome and why (raise when it must be retried)."""
        try:
            entry = ExternalEventEntry.from_fields(fields or {})
        except ValueError as exc:
            logger.error("bridge %s: dropping entry %s: %s", self.consumer_name, entry_id, exc)
            return "malformed", str(exc)
        workflow_id = grading_workflow_id(entry.submission_id)
        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe(rpc_timeout=self.rpc_timeout)
            if desc.status != WorkflowExecutionStatus.RUNNING:
                return self._not_running(entry, workflow_id, desc.status.name if desc.status else "?")
            owner = desc.typed_search_attributes.get(TENANT_KEY) or await desc.memo_value("tenant_id", None)
            if owner and owner != entry.tenant_id:
                logger.warning("bridge %s: event %s of tenant %s names %s of another tenant; not delivered",
                               self.consumer_name, entry.event_id, entry.tenant_id, workflow_id)
                return "tenant_mismatch", f"workflow {workflow_id} is not found"  # to its tenant: like a missing one
            handle = self.client.get_workflow_handle(workflow_id, run_id=desc.run_id)
            await handle.signal(SIGNAL_EXTERNAL_EVENT,
                                ExternalEvent(entry.event_type, entry.payload, entry.event_id),
                                rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return self._not_running(entry, workflow_id, "not found")
            if exc.status in TRANSIENT_RPC:
                raise TransientDeliveryError(f"{workflow_id}: {exc.status.name}: {exc}") from exc
            logger.error("bridge %s: Temporal refused event %s for %s: %s", self.consumer_name,
                         entry.event_id, workflow_id, exc)
            return "rejected", f"Temporal refused the signal to {workflow_id}: {exc}"
        logger.debug("bridge %s: signalled %s with %s (%s)", self.consumer_name, workflow_id, entry.event_type,
                     entry.event_id)
        return "signalled", ""

    def _not_running(self, entry: ExternalEventEntry, workflow_id: str, why: str) -> tuple[str, str]:
        logger.warning("bridge %s: event %s (%s) for %s acked without delivery: workflow %s", self.consumer_name,
                       entry.event_id, entry.event_type, workflow_id, why)
        return "not_running", f"workflow {workflow_id} is {why.lower()}"

    async def trim(self) -> None:
        """Drop entries older than the oldest one any consumer group still needs."""
        groups = await self.redis.xinfo_groups(self.stream)
        floor: tuple[int, int] | None = None
        for group in groups:
            name, keep = _text(group["name"]), _text(group["last-delivered-id"])
            if int(group.get("pending") or 0):
                summary = await self.redis.xpending(self.stream, name)
                keep = _text(summary["min"])
            key = _id(keep)
            floor = key if floor is None else min(floor, key)
        if floor is not None and floor > (0, 0):
            await self.redis.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)

    @staticmethod
    def _entries(reply: Any) -> list[tuple[str, dict[Any, Any]]]:
        """Entries of an ``XREADGROUP`` reply (RESP2 list or RESP3 dict)."""
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            batches = [batch for value in reply.values() for batch in value]
        else:  # RESP2: [[stream, entries]]
            batches = [batch for _, batch in reply]
        return [(_text(i), f) for batch in batches for i, f in batch if i is not None]


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
