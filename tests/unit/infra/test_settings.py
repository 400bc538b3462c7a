"""Settings validation: bad values name the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import Settings


def test_placeholder_secret_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADEFLOW_ENV", "prod")
    with pytest.raises(ValidationError, match="GRADEFLOW_JWT_SECRET"):
        Settings()


def test_real_secret_accepted_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADEFLOW_ENV", "prod")
    monkeypatch.setenv("GRADEFLOW_JWT_SECRET", "a-real-secret-of-decent-length")
    assert Settings().jwt_secret == "a-real-secret-of-decent-length"


@pytest.mark.parametrize("address", ["nohost", "host:", ":7233", "host:99999"])
def test_malformed_temporal_address(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("GRADEFLOW_TEMPORAL_ADDRESS", address)
    with pytest.raises(ValidationError, match="temporal_address"):
        Settings()
