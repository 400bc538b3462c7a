"""Dead letters for a tenant's admins: ``/v1/admin/dlq`` (list, show, replay, discard).

Everything runs under the caller's tenant (row-level security): another tenant's record is a 404,
exactly like a missing one. A replay goes through the kind's normal path (an outbox event back to
pending, an external event back on its stream, a submission retried from its last checkpoint);
replays and discards are audited with the caller's token subject and the reason given.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from api.auth import require_roles
from api.deps import PoolsDep, SettingsDep, TemporalDep, TenantDep
from api.errors import ProblemError
from api.schemas_admin import (
    DeadLetterActionCreate,
    DeadLetterActionOut,
    DeadLetterKind,
    DeadLetterOut,
    DeadLetterPage,
    DeadLetterStatus,
)
from infra.db.pools import PoolManager
from infra.events import dead_letters as dlq
from infra.security.tokens import Principal

router = APIRouter(prefix="/v1/admin/dlq", tags=["operations"])

AdminDep = Annotated[Principal, Depends(require_roles("admin"))]
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The dead letter's id.")]
RETRY_AFTER = {"Retry-After": "2"}
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such dead letter for this tenant."},
                                           409: {"description": "Not open, or what it names moved on."},
                                           503: {"description": "A service the replay needs is unreachable."}}


async def _out(pools: PoolManager, item: dlq.DeadLetter, tenant: str) -> DeadLetterOut:
    actions = await dlq.dead_letter_actions(pools, item.id, tenant_id=tenant)
    return DeadLetterOut(**{k: v for k, v in vars(item).items() if k != "tenant_id"},
                         actions=[DeadLetterActionOut(**{k: v for k, v in vars(a).items() if k != "id"})
                                  for a in actions])


@router.get("", response_model=DeadLetterPage, response_model_exclude_none=False)
async def list_dead_letters(admin: AdminDep, tenant: TenantDep, pools: PoolsDep,
                            kind: DeadLetterKind | None = None, status: DeadLetterStatus | None = None,
                            page_size: Annotated[int, Query(ge=1, le=100)] = 50,
                            cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None) -> DeadLetterPage:
    """Dead letters of the caller's tenant, oldest first, filtered by kind and status (default: all)."""
    items = await dlq.list_dead_letters(pools, tenant_id=tenant, kind=kind, status=status, limit=page_size + 1,
                                        after_id=int(cursor or 0))
    more = len(items) > page_size
    items = items[:page_size]
    return DeadLetterPage(items=[DeadLetterOut(**{k: v for k, v in vars(i).items() if k != "tenant_id"})
                                 for i in items],
                          next_cursor=str(items[-1].id) if more else None)


@router.get("/{item_id}", response_model=DeadLetterOut, responses={404: ERRORS[404]})
async def get_dead_letter(item_id: ItemId, admin: AdminDep, tenant: TenantDep, pools: PoolsDep) -> DeadLetterOut:
    """One dead letter with its audit trail."""
    try:
        item = await dlq.get_dead_letter(pools, item_id, tenant_id=tenant)
    except dlq.DeadLetterNotFoundError:
        raise _not_found(item_id) from None
    return await _out(pools, item, tenant)


@router.post("/{item_id}/replay", response_model=DeadLetterOut, responses=ERRORS)
async def replay_dead_letter(item_id: ItemId, body: DeadLetterActionCreate, admin: AdminDep, tenant: TenantDep,
                             pools: PoolsDep, temporal: TemporalDep, settings: SettingsDep,
                             request: Request) -> DeadLetterOut:
    """Replay it through its normal path (idempotent by event id); audited with the reason."""
    from temporalio.service import RPCError  # imported on use: the workflow types pull in the agent stack

    from infra.events.external import republish_dead_letter
    from infra.stores.interventions import NotRetryableError, SubmissionNotFoundError
    from infra.temporal.retry import RetryInProgressError, submission_retry

    retry = None
    if temporal is not None:
        retry = submission_retry(pools, temporal, settings=settings, **request.app.state.grading_options)
    try:
        item = await dlq.replay_dead_letter(pools, item_id, actor=admin.sub, reason=body.reason, tenant_id=tenant,
                                            retry=retry,
                                            republish=lambda payload: republish_dead_letter(pools.redis, payload))
    except dlq.DeadLetterNotFoundError:
        raise _not_found(item_id) from None
    except dlq.DeadLetterUnavailableError:
        raise ProblemError(503, "The workflow service is unreachable; retry shortly.", type_="temporal-unavailable",
                           headers=RETRY_AFTER) from None
    except (dlq.DeadLetterConflictError, NotRetryableError, RetryInProgressError) as exc:
        raise ProblemError(409, str(exc), type_="dead-letter-conflict") from None
    except SubmissionNotFoundError:
        raise ProblemError(409, f"Dead letter {item_id} names a submission that no longer exists.",
                           type_="dead-letter-conflict") from None
    except RPCError as exc:
        raise ProblemError(503, "The workflow service failed; retry shortly.", type_="temporal-unavailable",
                           headers=RETRY_AFTER) from exc
    return await _out(pools, item, tenant)


@router.post("/{item_id}/discard", response_model=DeadLetterOut, responses={404: ERRORS[404], 409: ERRORS[409]})
async def discard_dead_letter(item_id: ItemId, body: DeadLetterActionCreate, admin: AdminDep, tenant: TenantDep,
                              pools: PoolsDep) -> DeadLetterOut:
    """Give it up for good (an outbox event's later events go on); audited with the reason."""
    try:
        item = await dlq.discard_dead_letter(pools, item_id, actor=admin.sub, reason=body.reason, tenant_id=tenant)
    except dlq.DeadLetterNotFoundError:
        raise _not_found(item_id) from None
    except dlq.DeadLetterConflictError as exc:
        raise ProblemError(409, str(exc), type_="dead-letter-conflict") from None
    return await _out(pools, item, tenant)


def _not_found(item_id: int) -> ProblemError:
    return ProblemError(404, f"No dead letter {item_id} for this tenant.", type_="dead-letter-not-found")
