"""Bearer tokens: round trip, expiry, tampering, claims."""

from __future__ import annotations

import jwt
import pytest

from infra.security.tokens import (
    NoRoleError,
    Principal,
    TokenError,
    bearer_from_header,
    mint_token,
    subject_problem,
    verify_token,
)
from infra.settings import Settings

SETTINGS = Settings(jwt_secret="unit-test-secret-0123456789abcdef")


def test_round_trip() -> None:
    token = mint_token(SETTINGS, tenant="t1", roles=["reviewer", "submitter"], sub="alice")
    assert verify_token(SETTINGS, token) == Principal("alice", "t1", frozenset({"reviewer", "submitter"}))


def test_expired_token_is_refused() -> None:
    token = mint_token(SETTINGS, tenant="t1", roles=["submitter"], ttl_seconds=-60)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SETTINGS, token)


def test_wrong_secret_and_garbage_are_refused() -> None:
    token = mint_token(Settings(jwt_secret="another-secret-0123456789abcdef!!"), tenant="t", roles=["admin"])
    for bad in (token, "not-a-jwt", token[:-3] + "abc"):
        with pytest.raises(TokenError):
            verify_token(SETTINGS, bad)


def test_missing_claims_and_alg_none_are_refused() -> None:
    no_tenant = jwt.encode({"sub": "a", "roles": ["admin"], "exp": 2**33}, SETTINGS.jwt_secret, "HS256")
    with pytest.raises(TokenError, match="tenant"):
        verify_token(SETTINGS, no_tenant)
    unsigned = jwt.encode({"sub": "a", "tenant": "t", "roles": ["admin"], "exp": 2**33}, None, "none")
    with pytest.raises(TokenError):
        verify_token(SETTINGS, unsigned)


def test_unknown_roles_cannot_be_minted() -> None:
    with pytest.raises(ValueError):
        mint_token(SETTINGS, tenant="t", roles=["root"])
    with pytest.raises(ValueError):
        mint_token(SETTINGS, tenant="t", roles=[])


def test_admin_holds_every_role() -> None:
    assert Principal("a", "t", frozenset({"admin"})).has_any(["reviewer"])
    assert not Principal("a", "t", frozenset({"submitter"})).has_any(["reviewer"])


def test_bearer_header_parsing() -> None:
    assert bearer_from_header("Bearer abc") == "abc"
    assert bearer_from_header("bearer  abc ") == "abc"
    assert bearer_from_header("Basic abc") is None
    assert bearer_from_header("Bearer ") is None
    assert bearer_from_header(None) is None


def test_placeholder_secret_refused_in_prod() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(env="prod", jwt_secret="changeme")


def _signed(**claims) -> str:
    body = {"sub": "a", "tenant": "t", "roles": ["admin"], "exp": 2**33, **claims}
    return jwt.encode(body, SETTINGS.jwt_secret, "HS256")


@pytest.mark.parametrize("roles", [[], ["ADMIN"], ["admin "], ["root"], ["Reviewer", "x"]])
def test_a_token_granting_no_known_role_is_valid_but_grants_nothing(roles) -> None:
    with pytest.raises(NoRoleError):
        verify_token(SETTINGS, _signed(roles=roles))
    assert verify_token(SETTINGS, _signed(roles=[*roles, "reviewer"])).roles == frozenset({"reviewer"})


@pytest.mark.parametrize("sub", ["", "  ", "a\x00b", "a\udc00", "a\nb", "\x1b[31m", "x" * 257, 42, None, ["a"]])
def test_subjects_that_cannot_be_stored_are_refused(sub) -> None:
    assert subject_problem(sub) is not None
    with pytest.raises(TokenError, match="sub" if isinstance(sub, str) else None):  # PyJWT refuses non-strings
        verify_token(SETTINGS, _signed(sub=sub))
    if isinstance(sub, str) and sub:
        with pytest.raises(ValueError, match="sub"):
            mint_token(SETTINGS, tenant="t", roles=["admin"], sub=sub)


@pytest.mark.parametrize("sub", ["alice", "lms-integration:42", "école · 🎓", "x" * 256])
def test_printable_subjects_are_fine(sub) -> None:
    assert subject_problem(sub) is None
    assert verify_token(SETTINGS, mint_token(SETTINGS, tenant="t", roles=["admin"], sub=sub)).sub == sub
