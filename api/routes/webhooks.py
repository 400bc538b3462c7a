"""Signed webhooks: ``/v1/webhooks`` (register, list, show, delete, rotate the secret, enable, deliveries).

Admins only: an endpoint receives every subscribed event of the whole tenant (grades of every
submission) at a URL outside the platform, so it is the tenant's configuration, not a reviewer's.
Everything runs under the caller's tenant (row-level security): another tenant's endpoint is a 404.
A URL the environment does not allow (in prod: not https, or resolving to a loopback, private,
link-local or reserved address) is a 422 naming ``url``. The secret is in the reply to the
registration and to a rotation only; lists and reads never show it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from api.auth import require_roles
from api.deps import PoolsDep, SettingsDep, TenantDep, WebhookId
from api.errors import ProblemError
from api.schemas_webhooks import (
    DeliveryOut,
    DeliveryPage,
    DeliveryStatus,
    WebhookCreate,
    WebhookList,
    WebhookOut,
    WebhookWithSecret,
)
from infra.security.tokens import Principal
from infra.stores import webhooks
from infra.webhooks.signing import new_secret
from infra.webhooks.urls import WebhookUrlError, check_webhook_url

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

AdminDep = Annotated[Principal, Depends(require_roles("admin"))]
"""Path parameter: an endpoint id, canonicalised (not a UUID: 422 naming ``endpoint_id``)."""
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such webhook endpoint for this tenant."}}


def _not_found(endpoint_id: str) -> ProblemError:
    return ProblemError(404, f"No webhook endpoint {endpoint_id!r} for this tenant.", type_="webhook-not-found")


@router.post("", status_code=201, response_model=WebhookWithSecret)
async def create_webhook(body: WebhookCreate, admin: AdminDep, tenant: TenantDep, pools: PoolsDep,
                         settings: SettingsDep, response: Response) -> dict[str, Any]:
    """Register an endpoint for the listed event types; the reply carries its secret (shown this once).

    Each event is POSTed per the Standard Webhooks specification: ``webhook-id`` (the event id, the
    same on every retry), ``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 with the secret).
    """
    try:
        await check_webhook_url(body.url, env=settings.env)
    except WebhookUrlError as exc:
        raise ProblemError(422, f"The webhook URL is not allowed: it {exc}.", type_="validation-error",
                           errors=[{"field": "url", "message": f"url {exc}"}]) from None
    secret = new_secret()
    try:
        row = await webhooks.create_endpoint(pools, tenant, url=body.url, event_types=body.event_types,
                                             description=body.description, secret=secret, created_by=admin.sub)
    except webhooks.TooManyEndpointsError as exc:
        raise ProblemError(409, str(exc), type_="too-many-webhooks") from None
    response.headers["Location"] = f"/v1/webhooks/{row['id']}"
    return {**row, "secret": secret}


@router.get("", response_model=WebhookList)
async def list_webhooks(admin: AdminDep, tenant: TenantDep, pools: PoolsDep) -> dict[str, Any]:
    """The tenant's endpoints with their status (never their secrets)."""
    return {"items": await webhooks.list_endpoints(pools, tenant)}


@router.get("/{endpoint_id}", response_model=WebhookOut, responses=NOT_FOUND)
async def get_webhook(endpoint_id: WebhookId, admin: AdminDep, tenant: TenantDep, pools: PoolsDep) -> dict[str, Any]:
    """One endpoint: status, why it was disabled, since when it fails (never its secret)."""
    try:
        return await webhooks.get_endpoint(pools, tenant, endpoint_id)
    except webhooks.EndpointNotFoundError:
        raise _not_found(endpoint_id) from None


@router.delete("/{endpoint_id}", status_code=204, responses=NOT_FOUND)
async def delete_webhook(endpoint_id: WebhookId, admin: AdminDep, tenant: TenantDep, pools: PoolsDep) -> Response:
    """Delete the endpoint and its deliveries; nothing more is sent to it."""
    try:
        await webhooks.delete_endpoint(pools, tenant, endpoint_id)
    except webhooks.EndpointNotFoundError:
        raise _not_found(endpoint_id) from None
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookWithSecret, responses=NOT_FOUND)
async def rotate_webhook_secret(endpoint_id: WebhookId, admin: AdminDep, tenant: TenantDep, pools: PoolsDep,
                                settings: SettingsDep) -> dict[str, Any]:
    """Give the endpoint a new secret (shown this once).

    For ``GRADEFLOW_WEBHOOK_SECRET_GRACE_SECONDS`` (default 24 h; ``previous_secret_expires_at``)
    every request carries two signatures, one per secret, so a receiver still holding the old
    secret keeps verifying until it switches. Rotating again ends the older secret's grace at once.
    """
    secret = new_secret()
    try:
        row = await webhooks.rotate_secret(pools, tenant, endpoint_id, secret=secret,
                                           grace_seconds=settings.webhook_secret_grace_seconds)
    except webhooks.EndpointNotFoundError:
        raise _not_found(endpoint_id) from None
    return {**row, "secret": secret}


@router.post("/{endpoint_id}/enable", response_model=WebhookOut, responses=NOT_FOUND)
async def enable_webhook(endpoint_id: WebhookId, admin: AdminDep, tenant: TenantDep,
                         pools: PoolsDep) -> dict[str, Any]:
    """Turn a disabled endpoint back on: its pending deliveries go out again.

    Events committed while it was disabled were not recorded for it.
    """
    try:
        return await webhooks.enable_endpoint(pools, tenant, endpoint_id)
    except webhooks.EndpointNotFoundError:
        raise _not_found(endpoint_id) from None


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, responses=NOT_FOUND)
async def list_deliveries(endpoint_id: WebhookId, admin: AdminDep, tenant: TenantDep, pools: PoolsDep,
                          status: DeliveryStatus | None = None,
                          page_size: Annotated[int, Query(ge=1, le=100)] = 50,
                          cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, filtered by ``status``, paged with ``cursor``.

    Each: event id (the ``webhook-id``) and type, attempts, last status code and error, next attempt, times.
    """
    try:
        rows = await webhooks.list_deliveries(pools, tenant, endpoint_id, status=status, limit=page_size + 1,
                                              before_id=int(cursor) if cursor else None)
    except webhooks.EndpointNotFoundError:
        raise _not_found(endpoint_id) from None
    more = len(rows) > page_size
    rows = rows[:page_size]
    return {"items": [DeliveryOut(**r) for r in rows], "next_cursor": str(rows[-1]["id"]) if more else None}
