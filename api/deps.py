"""FastAPI dependencies as ``Annotated`` aliases; everything comes from ``request.app.state``.

``app.state`` holds ``settings``, ``pools`` (:class:`infra.db.pools.PoolManager`), ``temporal``
(a Temporal client, or ``None`` while unreachable) and ``cache`` (:class:`infra.cache.copies.Cache`).

Path parameters are validated here too: :data:`SubmissionId` and :data:`ExamId` accept every UUID
spelling (upper case, braces, ``urn:uuid:``, no hyphens) and hand the route the canonical one, so
every key, event, lock, workflow id and SQL parameter downstream sees one spelling; anything else
is a 422 naming the parameter.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Path
from pydantic import AfterValidator
from starlette.requests import HTTPConnection

from api.auth import PrincipalDep
from infra.db.pools import PoolManager
from infra.db.values import Label, canonical_uuid
from infra.settings import Settings

if TYPE_CHECKING:  # temporalio is imported lazily at run time
    from temporalio.client import Client

TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def get_settings_dep(conn: HTTPConnection) -> Settings:
    """The app's settings."""
    return conn.app.state.settings


def get_pools(conn: HTTPConnection) -> PoolManager:
    """The app's pool manager."""
    return conn.app.state.pools


def get_temporal(conn: HTTPConnection) -> Client | None:
    """The app's Temporal client (``None`` when it could not connect at start-up)."""
    return conn.app.state.temporal


def get_cache(conn: HTTPConnection) -> Any:
    """The app's read-through cache."""
    return conn.app.state.cache


def get_tenant(principal: PrincipalDep) -> str:
    """The caller's tenant, taken from the verified bearer token (401 without one).

    Every query of the request runs under this tenant's row-level-security context.
    """
    return principal.tenant_id


def get_trace_id(conn: HTTPConnection) -> str:
    """The W3C ``traceparent``'s trace id when valid, else a new 32-hex trace id."""
    match = TRACEPARENT_RE.fullmatch(conn.headers.get("traceparent", "").strip().lower())
    if match and set(match.group(1)) != {"0"}:
        return match.group(1)
    return uuid.uuid4().hex


def _uuid_path(what: str) -> Any:
    return Path(description=f"The {what}'s id: a UUID (any spelling; the canonical one is used).",
                json_schema_extra={"format": "uuid"})


SubmissionId = Annotated[str, _uuid_path("submission"), AfterValidator(canonical_uuid)]
"""Path parameter: a submission id, canonicalised (lower case, hyphenated)."""
ExamId = Annotated[str, _uuid_path("exam"), AfterValidator(canonical_uuid)]
"""Path parameter: an exam id, canonicalised (lower case, hyphenated)."""
BatchId = Annotated[str, _uuid_path("batch"), AfterValidator(canonical_uuid)]
"""Path parameter: a batch id, canonicalised (lower case, hyphenated)."""
RegradeRequestId = Annotated[str, _uuid_path("regrade request"), AfterValidator(canonical_uuid)]
"""Path parameter: a regrade request's id, canonicalised (lower case, hyphenated)."""
WebhookId = Annotated[str, _uuid_path("webhook endpoint"), AfterValidator(canonical_uuid)]
"""Path parameter: a webhook endpoint's id, canonicalised (lower case, hyphenated)."""
QuestionId = Annotated[Label, Path(min_length=1, max_length=64, description="The question's id in its exam.")]
"""Path parameter: a question id (1-64 characters, no control characters)."""

SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
PoolsDep = Annotated[PoolManager, Depends(get_pools)]
TemporalDep = Annotated[Any, Depends(get_temporal)]
CacheDep = Annotated[Any, Depends(get_cache)]
TenantDep = Annotated[str, Depends(get_tenant)]
TraceIdDep = Annotated[str, Depends(get_trace_id)]


CACHE_HEADER_VALUES = {"cache": "hit", "database": "miss", "database-degraded": "degraded"}


def x_cache(source: str) -> str:
    """``X-Cache`` header value for a :meth:`infra.cache.copies.Cache.read_through` source."""
    return CACHE_HEADER_VALUES.get(source, "miss")
