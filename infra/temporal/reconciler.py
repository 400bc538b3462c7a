"""The reconciler: starts the grading of submissions whose workflow was never started.

The API starts a submission's workflow right after its intake commits; if it dies in between, or
Temporal is unreachable, the submission stays ``queued``. Every ``interval`` seconds the reconciler
(run beside the outbox relay) looks for submissions still ``queued`` after ``grace`` seconds and starts
them: ``USE_EXISTING`` / ``REJECT_DUPLICATE`` make a start of a running or finished grading a no-op,
so no submission is stranded and none is graded twice. Unlike starting from every
``submission.received`` event, a submission the API started costs no second start.

Batches the same way: a batch (a regrade too) whose workflow start was never recorded ``grace`` seconds
after it was stored (the API could not reach Temporal) is started as it was asked for, then marked
started; batches go first, so their queued submissions are started by their batch, within its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from temporalio.client import Client

from infra.constants import ORCHESTRATION_QUEUE
from infra.db.pools import PoolManager
from infra.observability.tracing import trace_context, with_tracing
from infra.stores import batches, submissions
from infra.temporal.batches import start_recorded_batch
from infra.temporal.starter import start_grading

logger = logging.getLogger(__name__)


class StrandedReconciler:
    """Starts gradings of submissions left ``queued``, and batches left unstarted.

    Args:
        pools: Pool manager (PostgreSQL; no tenant context needed).
        client: Temporal client.
        grace_seconds: A submission queued for less than this is the API's to start.
        interval_seconds: Seconds between sweeps.
        batch: Submissions started per sweep at most.
        settings: Settings for the workflow's timeouts.
        task_queue: Orchestration task queue.
        **overrides: Extra ``GradingInput`` fields (tests).

    """

    def __init__(self, pools: PoolManager, client: Client, *, grace_seconds: float = 30.0,
                 interval_seconds: float = 10.0, batch: int = 100, settings: Any = None,
                 task_queue: str = ORCHESTRATION_QUEUE, **overrides: Any) -> None:
        self.pools = pools
        self.client = with_tracing(client)  # the workflow's spans continue the stored trace
        self.grace_seconds = grace_seconds
        self.interval_seconds = interval_seconds
        self.batch = batch
        self.settings = settings
        self.task_queue = task_queue
        self.overrides = overrides

    async def run_once(self) -> int:
        """One sweep: start every unstarted batch, then every stranded submission; return how many starts."""
        started = await self.start_unstarted_batches()
        return started + await self.start_stranded()

    async def start_unstarted_batches(self) -> int:
        """Start the batches whose start was never recorded after the grace period; return how many."""
        found = await batches.unstarted(self.pools, older_than_seconds=self.grace_seconds, limit=self.batch)
        started = 0
        for row in found:
            batch = await batches.load_batch(self.pools, row["tenant_id"], row["id"])
            if batch is None:
                continue
            with trace_context(batch["trace_id"] or ""):
                await start_recorded_batch(self.client, self.pools, row["tenant_id"], batch, settings=self.settings,
                                           task_queue=self.task_queue, **self.overrides)
            started += 1
        if started:
            logger.info("reconciler: started %d unstarted batch(es)", started)
        return started

    async def start_stranded(self) -> int:
        """Start every stranded submission found; return how many starts were made."""
        found = await submissions.stranded(self.pools, older_than_seconds=self.grace_seconds, limit=self.batch)
        for row in found:
            with trace_context(row["trace_id"] or ""):
                await start_grading(self.client, submission_id=row["id"], tenant_id=row["tenant_id"],
                                    exam_id=row["exam_id"], trace_id=row["trace_id"] or "", settings=self.settings,
                                    task_queue=self.task_queue, **self.overrides)
        if found:
            logger.info("reconciler: started %d stranded submission(s)", len(found))
        return len(found)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every ``interval_seconds`` until ``stop``; failures are logged and the next sweep retries."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - an outage: the next sweep retries
                logger.warning("reconciler sweep failed (%s: %s); retrying in %.0fs", type(exc).__name__, exc,
                               self.interval_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_seconds)
