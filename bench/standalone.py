"""What a benchmark that runs on its own (``python -m bench.<name>``) needs around its measurement.

A fresh embedded stack on free ports with a migrated database (the application role's settings, rate
limits lifted so the bench measures the platform, not its throttle), stopped and removed afterwards,
and the report written as ``bench/results/<name>-<UTC time>.json``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

RESULTS_DIR = Path(__file__).resolve().parent / "results"
APP_PASSWORD = "gradeflow-bench-app"
"""Password the bench's migrations give the application role."""
UNLIMITED = "1000000/minute"
"""Rate limit far above anything a bench sends."""


@contextmanager
def migrated_stack(prefix: str, database: str) -> Iterator[tuple[Any, str]]:
    """Start an embedded stack, create and migrate ``database``; yield ``(stack, admin URL of it)``.

    The stack is stopped and its folder deleted on exit.
    """
    from infra.db.migrate import migrate
    from infra.stack.embedded import EmbeddedStack, free_port

    work_dir = Path(tempfile.mkdtemp(prefix=prefix))
    stack = EmbeddedStack(work_dir / "stack", free_port(), free_port(), free_port(), free_port(), durable=False)
    try:
        stack.start()
        with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        admin = stack.database_admin_url.rsplit("/", 1)[0] + "/" + database
        asyncio.run(migrate(admin, app_password=APP_PASSWORD, log=lambda _: None))
        yield stack, admin
    finally:
        stack.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


def bench_settings(stack: Any, admin_url: str, **overrides: Any) -> Any:
    """Settings of the application role on that database, Temporal off, every rate limit lifted."""
    from infra.db.migrate import app_url_from_admin
    from infra.settings import Settings

    limits = {"rate_limit_submit": UNLIMITED, "rate_limit_read": UNLIMITED, "rate_limit_websocket": UNLIMITED}
    return Settings.model_validate({"env": "test", "database_url": app_url_from_admin(admin_url, APP_PASSWORD),
                                    "redis_url": stack.redis_url, "temporal_address": None, **limits, **overrides})


def save_report(name: str, started_at: datetime, report: dict[str, Any]) -> Path:
    """Write ``report`` as ``bench/results/<name>-<UTC time>.json``, print it, return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(report, indent=2)
    out.write_text(text + "\n")
    print(text)
    return out
