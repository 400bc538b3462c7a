"""The CLI turns bad configuration into one clear line naming the setting, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from infra.db.migrate import discover


def _run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRADEFLOW_")}


@pytest.mark.parametrize(
    ("args", "overrides", "setting"),
    [
        (["migrate"], {"GRADEFLOW_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db"}, "GRADEFLOW_DATABASE_URL"),
        (["migrate"], {"GRADEFLOW_DATABASE_URL": "not a url"}, "GRADEFLOW_DATABASE_URL"),
        (["migrate"], {}, "GRADEFLOW_DATABASE_URL"),
        (["worker"], {"GRADEFLOW_TEMPORAL_ADDRESS": "no-port"}, "GRADEFLOW_TEMPORAL_ADDRESS"),
        (["api"], {"GRADEFLOW_API_PORT": "99999"}, "GRADEFLOW_API_PORT"),
        (["api"], {"GRADEFLOW_ENV": "prod"}, "GRADEFLOW_JWT_SECRET"),
        (["api"], {"GRADEFLOW_ENV": "prod", "GRADEFLOW_JWT_SECRET": "changeme123"}, "GRADEFLOW_JWT_SECRET"),
        (["api"], {"GRADEFLOW_ENV": "prod", "GRADEFLOW_JWT_SECRET": "password"}, "GRADEFLOW_JWT_SECRET"),
        (["api"], {"GRADEFLOW_ENV": "prod", "GRADEFLOW_JWT_SECRET": "k" * 40}, "GRADEFLOW_APP_DB_PASSWORD"),
        (["migrate"], {"GRADEFLOW_ENV": "prod", "GRADEFLOW_JWT_SECRET": "k" * 40, "GRADEFLOW_APP_DB_PASSWORD": "s3cret",
                       "GRADEFLOW_DATABASE_URL": "postgresql://gradeflow_app:gradeflow-app@127.0.0.1:1/gradeflow"},
         "GRADEFLOW_DATABASE_URL"),
        (["token", "--tenant", "demo school"], {}, "--tenant"),
        (["worker", "--queue", "cognitive"], {"GRADEFLOW_LLM_MODEL": "openai:gpt-4o-mini"}, "gradeflow[openai]"),
        (["worker"], {"GRADEFLOW_LLM_MODEL": "anthropic:claude-sonnet-4-5"}, "gradeflow[anthropic]"),
        (["dev"], {"GRADEFLOW_LLM_MODEL": "no-such-model"}, "GRADEFLOW_LLM_MODEL"),
    ],
)
def test_bad_configuration_names_the_setting(args: list[str], overrides: dict[str, str], setting: str) -> None:
    result = _run(args, {**_clean_env(), **overrides})
    assert result.returncode != 0
    assert setting in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_model_is_checked_before_anything_starts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No provider package: the extra to install; the package but no key: the key; nothing started."""
    env = {**_clean_env(), "GRADEFLOW_LLM_MODEL": "openai:gpt-4o-mini", "GRADEFLOW_DATA_DIR": str(tmp_path / "data")}
    env.pop("OPENAI_API_KEY", None)
    missing = _run(["dev"], env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == ("gradeflow: GRADEFLOW_LLM_MODEL: 'openai:gpt-4o-mini' needs the langchain_openai "
                                      "package: pip install 'gradeflow[openai]'")
    stub = tmp_path / "site" / "langchain_openai"  # an importable package, as if the extra were installed
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stub.parent), env.get("PYTHONPATH")]))
    no_key = _run(["dev"], env)
    assert no_key.returncode == 2 and len(no_key.stderr.strip().splitlines()) == 1, no_key.stderr
    assert "GRADEFLOW_LLM_MODEL" in no_key.stderr and "OPENAI_API_KEY" in no_key.stderr
    assert not (tmp_path / "data").exists()  # the embedded stack never started


def test_wrong_password_names_the_setting(services) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(services.app_url)
    bad = urlunsplit((parts.scheme, f"gradeflow_app:wrong@{parts.hostname}:{parts.port}", parts.path, "", ""))
    env = {**services.env(), "GRADEFLOW_DATABASE_URL": bad}
    env.pop("GRADEFLOW_DATABASE_ADMIN_URL")
    result = _run(["migrate"], env)
    assert result.returncode == 2
    assert "GRADEFLOW_DATABASE_URL" in result.stderr and "password authentication failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_redis_names_the_setting(services) -> None:  # type: ignore[no-untyped-def]
    from infra.stack.embedded import free_port

    env = {**services.env(), "GRADEFLOW_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = _run(["relay"], env)
    assert result.returncode == 2
    assert "GRADEFLOW_REDIS_URL" in result.stderr and "Traceback" not in result.stderr


def test_concurrent_migrate_applies_each_file_once(services, pg_admin_url: str) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE gradeflow_migrate_race")
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(pg_admin_url)
    race_url = urlunsplit((parts.scheme, parts.netloc, "/gradeflow_migrate_race", "", ""))
    env = {**services.env(), "GRADEFLOW_DATABASE_ADMIN_URL": race_url, "GRADEFLOW_DATABASE_URL": race_url}
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: _run(["migrate"], env), range(2)))
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        applied_lines = [line for r in results for line in r.stdout.splitlines() if line.startswith("applied ")]
        assert sorted(applied_lines_names := [line.split()[1] for line in applied_lines]) == sorted(
            m.name for m in discover()
        ), applied_lines_names
        with psycopg.connect(race_url) as conn:
            rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version").fetchall()
        assert sorted(rows) == [(m.version, 1) for m in discover()]
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE gradeflow_migrate_race WITH (FORCE)")
