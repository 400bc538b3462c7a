"""Bearer authentication and role checks for routes and WebSockets.

``PrincipalDep`` resolves the caller from ``Authorization: Bearer <jwt>`` (401 when missing,
invalid or expired, with ``WWW-Authenticate: Bearer``; 403 when the token grants no known role);
``require_roles(...)`` adds a 403 check. Middlewares that run before routing call
:func:`principal_from_scope`, which caches its result in the request state so the token is verified
once per request.

Who reads what (the README's API contract says the same):

- ``submitter`` is an LMS integration, not a teacher: it creates submissions and reads the ones it
  created (results and progress included), lists exams and reads their questions, but never an
  answer key (rubrics and their hashes are left out) nor another caller's submissions.
- ``reviewer`` and ``admin`` read everything in their tenant, answer keys included.
- a token whose roles are all unknown (``[]``, ``["ADMIN"]``, ``["admin "]``) may do nothing: 403.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from infra.security.tokens import NoRoleError, Principal, TokenError, bearer_from_header, verify_token
from infra.settings import get_settings

STATE_KEY = "principal"
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="gradeflow"'}

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearerAuth",
    description="HS256 JWT with claims `sub`, `tenant`, `roles`, `exp` (`gradeflow token` mints one).",
)


def settings_of(app: Any) -> Any:
    """The settings an app was built with (``app.state.settings``), else the process settings."""
    state = getattr(app, "state", None)
    return getattr(state, "settings", None) or get_settings()


def _raw_token(scope: MutableMapping[str, Any]) -> str | None:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    token = bearer_from_header(headers.get("authorization"))
    if token is None and scope.get("type") == "websocket":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [None])[0]
    return token


def principal_from_scope(scope: MutableMapping[str, Any], settings: Any | None = None) -> Principal | TokenError | None:
    """Verify the caller of an ASGI scope once and cache the outcome in its state.

    Args:
        scope: HTTP or WebSocket scope; WebSockets may pass the token as ``?token=``.
        settings: settings holding ``jwt_secret`` (default: the app's).

    Returns:
        The principal, a :class:`TokenError` for a bad token (a :class:`NoRoleError` for one that
        grants no known role: routes answer 403, WebSockets close with 4403, middlewares see no
        caller), or ``None`` without a token.

    """
    state = scope.setdefault("state", {})
    if STATE_KEY in state:
        return state[STATE_KEY]
    token = _raw_token(scope)
    result: Principal | TokenError | None = None
    if token is not None:
        try:
            result = verify_token(settings or settings_of(scope.get("app")), token)
        except TokenError as exc:
            result = exc
    state[STATE_KEY] = result
    return result


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=WWW_AUTHENTICATE)


async def get_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """FastAPI dependency: the authenticated caller, or 401."""
    result = principal_from_scope(request.scope)
    if result is None:
        raise _unauthorized("missing bearer token")
    if isinstance(result, NoRoleError):  # authenticated, but allowed nothing
        raise HTTPException(status_code=403, detail=str(result))
    if isinstance(result, TokenError):
        raise _unauthorized(str(result))
    return result


PrincipalDep = Annotated[Principal, Depends(get_principal)]

READ_ALL_ROLES = ("reviewer",)
"""Roles that read every submission and answer key of their tenant (``admin`` too, as always)."""


def reads_everything(principal: Principal) -> bool:
    """Whether the caller reads all of its tenant's submissions and the answer keys (rubrics)."""
    return principal.has_any(READ_ALL_ROLES)


def may_read_submission(principal: Principal, submitted_by: str | None) -> bool:
    """Whether the caller may read a submission created by ``submitted_by`` (its token's ``sub``)."""
    return reads_everything(principal) or (submitted_by is not None and submitted_by == principal.sub)


def require_roles(*roles: str) -> Any:
    """Dependency factory: the caller must hold one of ``roles`` (``admin`` passes all), else 403.

    Example:
        ``ReviewerDep = Annotated[Principal, Depends(require_roles("reviewer"))]``

    """

    async def check(principal: PrincipalDep) -> Principal:
        if not principal.has_any(roles):
            raise HTTPException(status_code=403, detail=f"requires one of the roles: {', '.join(roles)}")
        return principal

    return check


SUBMITTER = Depends(require_roles("submitter"))
"""Route dependency: submitting work needs ``submitter`` (or ``admin``)."""
AUTHOR = Depends(require_roles("reviewer"))
"""Route dependency: authoring exams/rubrics and reviewing grades needs ``reviewer`` (or ``admin``)."""
