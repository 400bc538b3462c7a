"""The batch workflow's activity: tell the exam's live feeds how a batch is progressing.

``publish_batch_progress`` publishes a ``batch.progress`` message (counts by status, done, total,
running, percentage) on the tenant's Redis channel with the batch's exam, so every feed of that exam
(``WS /v1/ws/exams/{id}``) gets it. Best-effort like every live message: a Redis failure is logged
by :mod:`infra.events.live` and the batch goes on; the durable view stays ``GET /v1/batches/{id}``.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from activities.types import BatchProgressInput
from infra.constants import EventType
from infra.db.pools import PoolManager
from infra.events import live


def batch_progress_payload(inp: BatchProgressInput) -> dict[str, Any]:
    """The message's payload: the fields of ``GET /v1/batches/{id}`` a dashboard needs."""
    percentage = round(100.0 * inp.done / inp.total, 1) if inp.total else 100.0
    return {"batch_id": inp.batch_id, "kind": inp.kind, "total": inp.total, "done": inp.done,
            "running": inp.running, "percentage": percentage, "counts": dict(inp.counts)}


class BatchActivities:
    """Activities of ``BatchGradingWorkflow`` (orchestration queue).

    Args:
        pools: The process's pool manager (its Redis client publishes).

    """

    def __init__(self, pools: PoolManager) -> None:
        self.pools = pools

    @activity.defn
    async def publish_batch_progress(self, inp: BatchProgressInput) -> bool:
        """Publish the batch's progress to its exam's feeds; ``False`` if Redis refused it (logged)."""
        return await live.publish(self.pools.redis, EventType.BATCH_PROGRESS, tenant_id=inp.tenant_id,
                                  submission_id="", exam_id=inp.exam_id, data=batch_progress_payload(inp))
