"""Grading progress: the workflow's ``get_progress`` Query while it runs, the stored status otherwise."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from fastapi import APIRouter

from api.auth import PrincipalDep, may_read_submission
from api.deps import PoolsDep, SubmissionId, TemporalDep, TenantDep
from api.errors import ProblemError
from api.schemas import ProgressOut
from infra.constants import QUERY_PROGRESS, SubmissionStatus
from infra.stores import submissions

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/submissions", tags=["progress"])

QUERY_TIMEOUT_SECONDS = 3.0
"""Longest a progress query may take (no worker polling: fall back to the stored status)."""

STORED_PERCENT = {
    SubmissionStatus.QUEUED: 0.0, SubmissionStatus.GRADING: 0.0, SubmissionStatus.NEEDS_REVIEW: 100.0,
    SubmissionStatus.COMPLETED: 100.0, SubmissionStatus.FAILED: 100.0,
    SubmissionStatus.NEEDS_INTERVENTION: 0.0,
}


async def _query(temporal: Any, workflow_id: str) -> dict[str, Any] | None:
    """Query a running workflow's progress; ``None`` when it is not running or unreachable."""
    if temporal is None:
        return None
    from temporalio.client import WorkflowExecutionStatus

    try:
        handle = temporal.get_workflow_handle(workflow_id)
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            return None
        result = await asyncio.wait_for(
            handle.query(QUERY_PROGRESS, rpc_timeout=timedelta(seconds=QUERY_TIMEOUT_SECONDS)),
            QUERY_TIMEOUT_SECONDS + 0.5)
    except Exception as exc:  # noqa: BLE001 - not started yet, finished, or Temporal down
        logger.debug("progress query of %s failed: %s", workflow_id, exc)
        return None
    if hasattr(result, "__dataclass_fields__"):
        from dataclasses import asdict

        result = asdict(result)
    elif hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    return result if isinstance(result, dict) else None


@router.get("/{submission_id}/progress", response_model=ProgressOut)
async def get_progress(submission_id: SubmissionId, principal: PrincipalDep, tenant: TenantDep, pools: PoolsDep,
                       temporal: TemporalDep) -> dict:
    """Live progress of a running grading; the stored status for finished or not-yet-started ones."""
    stored = await submissions.load_status(pools, tenant, submission_id)
    if stored is None or not may_read_submission(principal, stored["submitted_by"]):
        raise ProblemError(404, f"No submission {submission_id!r} for this tenant.",
                           type_="submission-not-found")
    status = stored["status"]
    live = await _query(temporal, stored["workflow_id"])
    if live is not None:
        updated = live.get("updated_at")
        return {"submission_id": submission_id, "status": status, "stage": str(live.get("stage", status)),
                "percentage": float(live.get("percentage") or 0.0), "details": live.get("details") or {},
                "updated_at": str(updated) if updated is not None else None, "source": "workflow"}
    return {"submission_id": submission_id, "status": status, "stage": status,
            "percentage": STORED_PERCENT.get(SubmissionStatus(status), 0.0), "details": {},
            "updated_at": None, "source": "database"}
