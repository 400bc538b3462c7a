"""``POST /v1/dev/token``: mint a reviewer token without credentials, for the dashboard's sign-in in dev.

Only mounted when ``GRADEFLOW_ENV`` is not ``prod`` (see :func:`api.ui.install_ui`): in prod the
path does not exist at all (404), so no build of the API can hand out tokens there. It signs with the
process's ``GRADEFLOW_JWT_SECRET`` exactly like ``gradeflow token --role reviewer``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SettingsDep
from infra.security.tokens import DEFAULT_TTL_SECONDS, TENANT_RE, mint_token

PATH = "/v1/dev/token"
DEV_ROLES = ("reviewer",)
DEV_SUBJECT = "dev-reviewer"
DEFAULT_TENANT = "dev"

router = APIRouter(tags=["dev"])


class DevTokenCreate(BaseModel):
    """Which tenant the dev reviewer token is for."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"tenant": "dev"}]})

    tenant: str = Field(default=DEFAULT_TENANT, pattern=TENANT_RE.pattern,
                        description="Tenant claim: 1-64 characters [A-Za-z0-9_.:-], starting with a letter or digit.")


class DevTokenOut(BaseModel):
    """A freshly minted bearer token."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkZXYtcmV2aWV3ZXIifQ.c2lnbmF0dXJl",
        "tenant": "dev", "roles": ["reviewer"], "sub": DEV_SUBJECT, "expires_in": DEFAULT_TTL_SECONDS}]})

    token: str
    tenant: str
    roles: list[str]
    sub: str
    expires_in: int = Field(description="Seconds the token stays valid.")


@router.post(PATH, response_model=DevTokenOut)
async def mint_dev_token(settings: SettingsDep, body: DevTokenCreate | None = None) -> dict:
    """Mint a reviewer token for ``tenant`` (dev and test only; this path is absent in prod).

    Needs no token: it is how the dashboard signs in on a developer's machine.
    """
    tenant = (body or DevTokenCreate()).tenant
    token = mint_token(settings, tenant=tenant, roles=DEV_ROLES, sub=DEV_SUBJECT)
    return {"token": token, "tenant": tenant, "roles": list(DEV_ROLES), "sub": DEV_SUBJECT,
            "expires_in": DEFAULT_TTL_SECONDS}


def dev_tokens_enabled(settings: Any) -> bool:
    """Whether this process may mint dev tokens (anything but ``GRADEFLOW_ENV=prod``)."""
    return getattr(settings, "env", "prod") != "prod"


def install_dev_token(app: FastAPI) -> None:
    """Mount :data:`PATH` and mark it as needing no bearer token in the OpenAPI document."""
    app.include_router(router)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        op = schema.get("paths", {}).get(PATH, {}).get("post")
        if op is not None:
            op["security"] = []
            for code in ("401", "403", "404"):
                op.get("responses", {}).pop(code, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
