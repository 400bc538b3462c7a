"""Backup activity: dump the database, verify the dump in a scratch database, prune old backups.

Runs on the orchestration worker (started nightly by the ``BackupWorkflow`` schedule), which needs the
owner URL (``GRADEFLOW_DATABASE_ADMIN_URL``), ``pg_dump``/``pg_restore`` and the backup folder. The
result is one log line and the ``gradeflow_backup*`` metrics of :mod:`infra.observability.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from infra.db.backup import BackupError, BackupResult, create_backup, prune_backups
from infra.observability import metrics

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0
"""Heartbeat interval while pg_dump / pg_restore run."""


@dataclass
class BackupInput:
    """Input of :meth:`BackupActivities.run_backup`."""

    reason: str = "schedule"
    """Why it runs (logged)."""
    verify: bool = True
    """Restore the dump into a scratch database and compare row counts."""
    directory: str = ""
    """Backup folder; empty: ``Settings.backup_path``."""
    retention_days: float | None = None
    """Backups older than this are deleted afterwards; ``None``: ``Settings.backup_retention_days``."""


@dataclass
class BackupOutput:
    """What a backup run did."""

    path: str
    """The dump written."""
    size_bytes: int
    sha256: str
    tables: int
    rows: int
    verified: bool | None
    """``True``: restored and every row count equal; ``False``: verification failed; ``None``: not verified."""
    pruned: list[str] = field(default_factory=list)
    """Backups deleted by the retention rule."""


def report(result: BackupResult, seconds: float, pruned: list[Path]) -> None:
    """The log line and the metrics of a backup."""
    verification = result.verification
    outcome = ("unverified" if verification is None else "verified" if verification.ok
               else "verification_failed")
    metrics.BACKUPS.labels(outcome).inc()
    metrics.BACKUP_SIZE.set(result.manifest["size_bytes"])
    metrics.BACKUP_DURATION.observe(seconds)
    if verification is not None and verification.ok:
        metrics.BACKUP_LAST_VERIFIED.set(datetime.now(UTC).timestamp())
    level = logging.ERROR if outcome == "verification_failed" else logging.INFO
    logger.log(level, "backup %s: %s, %d bytes, %d tables, %d rows, %.1f s; %d old backup(s) pruned%s",
               outcome, result.path, result.manifest["size_bytes"], len(result.manifest["tables"]),
               result.manifest["rows"], seconds, len(pruned),
               f"; {verification.error or verification.mismatches}" if verification and not verification.ok else "")


class BackupActivities:
    """The backup activity, bound to the worker's settings.

    Args:
        settings: :class:`infra.settings.Settings` (admin URL, backup folder, retention, tools folder).

    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @activity.defn
    async def run_backup(self, inp: BackupInput) -> BackupOutput:
        """Back up, verify and prune; fail (non-retryable) when the verification fails.

        Raises:
            ApplicationError: ``BackupNotConfigured`` without a database URL, ``BackupVerificationFailed``
                when the dump does not restore to the same row counts (it is kept, marked in its manifest).

        """
        admin_url = self.settings.admin_url
        if not admin_url:
            raise ApplicationError("GRADEFLOW_DATABASE_ADMIN_URL is not set", type="BackupNotConfigured",
                                   non_retryable=True)
        directory = Path(inp.directory) if inp.directory else Path(self.settings.backup_path)
        retention = inp.retention_days if inp.retention_days is not None else self.settings.backup_retention_days
        ticker = asyncio.create_task(_heartbeat())
        started = time.monotonic()
        try:
            result = await create_backup(admin_url, directory, bin_dir=self.settings.pg_bin_dir, verify=inp.verify)
        except BackupError:
            metrics.BACKUPS.labels("failed").inc()
            raise
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        pruned = prune_backups(directory, retention)
        report(result, time.monotonic() - started, pruned)
        verification = result.verification
        if verification is not None and not verification.ok:
            why = verification.error or verification.mismatches
            raise ApplicationError(f"backup {result.path} did not verify: {why}", type="BackupVerificationFailed",
                                   non_retryable=True)
        return BackupOutput(str(result.path), result.manifest["size_bytes"], result.manifest["sha256"],
                            len(result.manifest["tables"]), result.manifest["rows"],
                            None if verification is None else verification.ok, [str(p) for p in pruned])


async def _heartbeat() -> None:
    while True:
        activity.heartbeat("backing up")
        await asyncio.sleep(HEARTBEAT_SECONDS)
