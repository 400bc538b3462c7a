"""HS256 bearer tokens: mint them for dev and tests, verify them for the API.

Claims: ``sub`` (the caller), ``tenant`` (the tenant id every query runs under), ``roles`` (a
subset of :data:`ROLES`), ``iat`` and ``exp``. The secret comes from
:attr:`infra.settings.Settings.jwt_secret`, which refuses placeholders outside dev/test.

Claims are checked at the edge, since they are stored (audit rows, events, idempotency keys): ``sub``
is 1-256 printable characters (no NUL, control character or lone surrogate), ``tenant`` matches
:data:`TENANT_RE`. Roles outside :data:`ROLES` are dropped; a token left with none is authenticated
but may do nothing (the API answers 403).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

ALGORITHM = "HS256"
ROLES = ("submitter", "reviewer", "admin")
DEFAULT_TTL_SECONDS = 3600
LEEWAY_SECONDS = 5
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
"""Tenant ids: 1-64 characters, safe in Redis key names and the ``tenants.id`` check."""
MAX_SUB_LENGTH = 256
"""Longest accepted ``sub`` claim."""


def subject_problem(sub: object) -> str | None:
    """Why ``sub`` cannot name a caller (``None`` when it can): 1-256 printable characters."""
    if not isinstance(sub, str) or not sub.strip():
        return "must be a non-empty string"
    if len(sub) > MAX_SUB_LENGTH:
        return f"must be at most {MAX_SUB_LENGTH} characters"
    if not sub.isprintable():  # NUL, control characters, lone surrogates, line breaks
        return "must be printable (no NUL, control characters or lone surrogates)"
    return None


class TokenError(ValueError):
    """A token is missing, malformed, badly signed, expired or lacks a required claim."""


class NoRoleError(TokenError):
    """A valid token whose roles are all unknown (``[]``, ``["ADMIN"]``, ``["admin "]``): it may do nothing."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    sub: str
    """Subject: the caller's stable id (user or integration)."""
    tenant_id: str
    """Tenant the caller acts for; all data access is scoped to it."""
    roles: frozenset[str]
    """Roles granted by the token (subset of ``ROLES``)."""

    def has_any(self, roles: Iterable[str]) -> bool:
        """Whether the principal holds at least one of ``roles`` (``admin`` holds them all)."""
        wanted = set(roles)
        return "admin" in self.roles or bool(wanted & self.roles)


def mint_token(settings: Any, *, tenant: str, roles: Iterable[str], sub: str | None = None,
               ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None) -> str:
    """Sign a bearer token.

    Args:
        settings: :class:`infra.settings.Settings` (only ``jwt_secret`` is read).
        tenant: tenant id put in the ``tenant`` claim.
        roles: roles to grant; each must be one of ``ROLES``.
        sub: subject; a random ``dev-…`` id when omitted.
        ttl_seconds: lifetime; may be negative to mint an already expired token (tests).
        now: issue time as a UNIX timestamp (default: the current time).

    Returns:
        The compact JWT.

    Raises:
        ValueError: an unknown role, an empty role list, an empty tenant or a subject the API
            would refuse.

    """
    granted = sorted(set(roles))
    unknown = set(granted) - set(ROLES)
    if unknown or not granted:
        raise ValueError(f"roles must be a non-empty subset of {ROLES}, got {granted}")
    if not TENANT_RE.fullmatch(tenant or ""):
        raise ValueError("tenant must be 1-64 characters [A-Za-z0-9_.:-]")
    subject = sub or f"dev-{uuid.uuid4().hex[:8]}"
    if (problem := subject_problem(subject)) is not None:
        raise ValueError(f"sub {problem}")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "tenant": tenant,
        "roles": granted,
        "iat": issued,
        "exp": issued + int(ttl_seconds),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def verify_token(settings: Any, token: str) -> Principal:
    """Check a token's signature, expiry and claims.

    Args:
        settings: :class:`infra.settings.Settings`.
        token: the compact JWT (without the ``Bearer`` prefix).

    Returns:
        The principal the token names.

    Raises:
        NoRoleError: the token is valid but grants none of :data:`ROLES` (the API answers 403).
        TokenError: with a short, client-safe reason.

    """
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=[ALGORITHM], leeway=LEEWAY_SECONDS,
            options={"require": ["sub", "tenant", "roles", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token expired") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("token invalid") from exc
    sub, tenant, roles = claims["sub"], claims["tenant"], claims["roles"]
    if (problem := subject_problem(sub)) is not None:
        raise TokenError(f"token subject (sub) {problem}")
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise TokenError("token tenant must be 1-64 characters [A-Za-z0-9_.:-]")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("token roles must be a list of strings")
    granted = frozenset(r for r in roles if r in ROLES)
    if not granted:
        raise NoRoleError(f"the token grants none of the roles {', '.join(ROLES)} (names are exact, lower case)")
    return Principal(sub=sub, tenant_id=tenant, roles=granted)


def bearer_from_header(value: str | None) -> str | None:
    """Extract the token of an ``Authorization: Bearer <token>`` header value, if any."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
