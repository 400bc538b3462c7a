"""Maintenance activities: periodic clean-up that crosses tenants through narrow SQL functions.

The application role is bound by row-level security, so cross-tenant deletes go through the
``SECURITY DEFINER`` functions of ``migrations/0003`` rather than a privileged role.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from temporalio import activity

from infra.pools import PoolManager

logger = logging.getLogger(__name__)

PURGE_IDEMPOTENCY_SQL = "SELECT purge_expired_idempotency_keys() AS deleted"


@dataclass
class PurgeKeysInput:
    """Input of :meth:`MaintenanceActivities.purge_expired_idempotency_keys`."""

    reason: str = "schedule"
    """Why the purge runs (logged)."""


@dataclass
class PurgeKeysOutput:
    """Result of a purge."""

    deleted: int = 0
    """Expired idempotency keys removed."""


class MaintenanceActivities:
    """Clean-up activities bound to the worker's pools.

    Args:
        pools: the process's pool manager.

    """

    def __init__(self, pools: PoolManager) -> None:
        self.pools = pools

    @activity.defn
    async def purge_expired_idempotency_keys(self, inp: PurgeKeysInput) -> PurgeKeysOutput:
        """Delete idempotency keys past their expiry, for every tenant."""
        async with self.pools.connection() as conn, conn.transaction():
            cur = await conn.execute(PURGE_IDEMPOTENCY_SQL)
            row = await cur.fetchone()
        deleted = int(row["deleted"] if row else 0)
        logger.info("purged %d expired idempotency keys (%s)", deleted, inp.reason)
        return PurgeKeysOutput(deleted=deleted)
