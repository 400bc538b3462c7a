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
    monkeypatch.setenv("GRADEFLOW_JWT_SECRET", "a-real-secret-of-decent-length-32b")
    monkeypatch.setenv("GRADEFLOW_APP_DB_PASSWORD", "not-the-default")
    assert Settings().jwt_secret == "a-real-secret-of-decent-length-32b"


@pytest.mark.parametrize("secret", ["x", "password", "changeme123", "y" * 31])
def test_short_secret_refused_in_prod_only(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("GRADEFLOW_JWT_SECRET", secret)
    monkeypatch.setenv("GRADEFLOW_APP_DB_PASSWORD", "not-the-default")
    assert Settings(env="dev").jwt_secret == secret
    with pytest.raises(ValidationError, match="GRADEFLOW_JWT_SECRET must be at least 32 bytes"):
        Settings(env="prod")


@pytest.mark.parametrize(("variable", "value", "setting"), [
    ("GRADEFLOW_APP_DB_PASSWORD", "gradeflow-app", "GRADEFLOW_APP_DB_PASSWORD"),
    ("GRADEFLOW_DATABASE_URL", "postgresql://gradeflow_app:gradeflow-app@db:5432/gf", "GRADEFLOW_DATABASE_URL"),
    ("GRADEFLOW_DATABASE_ADMIN_URL", "postgresql://gradeflow_app:gradeflow-app@db/gf", "GRADEFLOW_DATABASE_ADMIN_URL"),
])
def test_default_database_password_refused_in_prod(monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
                                                    setting: str) -> None:
    monkeypatch.setenv("GRADEFLOW_JWT_SECRET", "k" * 32)
    monkeypatch.setenv("GRADEFLOW_APP_DB_PASSWORD", "not-the-default")
    monkeypatch.setenv(variable, value)
    Settings(env="dev")
    with pytest.raises(ValidationError, match=f"{setting} .*default"):
        Settings(env="prod")


@pytest.mark.parametrize("address", ["nohost", "host:", ":7233", "host:99999"])
def test_malformed_temporal_address(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("GRADEFLOW_TEMPORAL_ADDRESS", address)
    with pytest.raises(ValidationError, match="temporal_address"):
        Settings()


def test_demo_grader_delay_refused_in_prod_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADEFLOW_JWT_SECRET", "k" * 32)
    monkeypatch.setenv("GRADEFLOW_APP_DB_PASSWORD", "not-the-default")
    monkeypatch.setenv("GRADEFLOW_DEMO_GRADER_DELAY_SECONDS", "1.5")
    assert Settings(env="dev").demo_grader_delay_seconds == 1.5
    with pytest.raises(ValidationError, match="GRADEFLOW_DEMO_GRADER_DELAY_SECONDS .*refused in prod"):
        Settings(env="prod")
    monkeypatch.setenv("GRADEFLOW_DEMO_GRADER_DELAY_SECONDS", "0")
    assert Settings(env="prod").demo_grader_delay_seconds == 0
