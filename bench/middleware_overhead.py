"""Overhead of the idempotency and rate-limit middlewares: p50 latency of a GET and a POST, with and
without them, in the same run, as ratios. ``python -m bench.middleware_overhead`` (env ``BENCH_N``).

Two copies of the real app (real lifespan) run on uvicorn side by side against one embedded stack;
the "without" copy has the two middlewares removed before its stack is built. Requests alternate
between the copies so both see the same machine state. Temporal is left out (``temporal`` is
``None``: the POST stores the submission and leaves the workflow start to the reconciler) so the
ratio isolates the middlewares from workflow-start latency. Prints JSON and writes it to
``bench/results/middleware_overhead-<time>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql

from bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
APP_PASSWORD = "gradeflow-bench-app"
ANSWERS = {"q1": "b"}
EXAM = {"title": "bench", "questions": [{"id": "q1", "type": "choice", "prompt": "p", "max_points": 1,
                                         "rubric": {"options": ["a", "b"], "correct": ["b"]}}]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def _build(settings: Any, *, with_middlewares: bool) -> Any:
    from api.app import create_app
    from api.middleware.idempotency import IdempotencyMiddleware
    from api.middleware.ratelimit import RateLimitMiddleware

    app = create_app(settings)
    if not with_middlewares:
        app.user_middleware = [m for m in app.user_middleware
                               if m.cls not in (IdempotencyMiddleware, RateLimitMiddleware)]
    return app


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    resp = await call()
    elapsed = time.perf_counter() - started
    if resp.status_code >= 300:
        raise RuntimeError(f"unexpected {resp.status_code}: {resp.text[:200]}")
    return elapsed


async def measure(settings: Any, n: int) -> dict[str, Any]:
    """Run ``n`` GETs and ``n`` POSTs against each copy, alternating; return the p50s and ratios."""
    from infra.security.tokens import ROLES, mint_token

    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {mint_token(settings, tenant=tenant, roles=ROLES, sub='bench')}"}
    samples: dict[str, dict[str, list[float]]] = {"with": {"get": [], "post": []},
                                                  "without": {"get": [], "post": []}}
    async with _serve(_build(settings, with_middlewares=True)) as with_url, \
            _serve(_build(settings, with_middlewares=False)) as without_url, \
            httpx.AsyncClient(timeout=30) as http:
        exam = (await http.post(f"{with_url}/v1/exams", json=EXAM, headers=headers)).json()["id"]
        sub = (await http.post(f"{with_url}/v1/submissions", headers=headers, json={
            "exam_id": exam, "student_id": "s", "answers": ANSWERS})).json()["submission_id"]
        urls = {"with": with_url, "without": without_url}
        for i in range(n + 20):  # the first 20 rounds warm both copies up and are dropped
            order = ("with", "without") if i % 2 == 0 else ("without", "with")
            for variant in order:
                base = urls[variant]
                get = await _timed(lambda base=base: http.get(f"{base}/v1/submissions/{sub}", headers=headers))
                body = {"exam_id": exam, "student_id": f"s-{variant}-{i}", "answers": ANSWERS}
                keyed = {**headers, "Idempotency-Key": uuid.uuid4().hex}
                post = await _timed(lambda base=base, body=body, keyed=keyed: http.post(
                    f"{base}/v1/submissions", json=body, headers=keyed))
                if i >= 20:
                    samples[variant]["get"].append(get)
                    samples[variant]["post"].append(post)
    p50 = {v: {k: round(percentile(xs, 0.5) * 1000, 3) for k, xs in d.items()} for v, d in samples.items()}
    p95 = {v: {k: round(percentile(xs, 0.95) * 1000, 3) for k, xs in d.items()} for v, d in samples.items()}
    return {
        "n_per_variant": n, "p50_ms": p50, "p95_ms": p95,
        "ratio_p50_with_over_without": {k: round(p50["with"][k] / p50["without"][k], 3) for k in ("get", "post")},
        "notes": ["GET /v1/submissions/{id} (Redis hit) and POST /v1/submissions with a fresh Idempotency-Key "
                  "each time (claim + complete: two extra PostgreSQL transactions); requests sequential, "
                  "variants alternating; Temporal disabled in both copies."],
    }


def main() -> int:
    """Start an embedded stack, measure, print and save the JSON report."""
    from infra.db.migrate import app_url_from_admin, migrate
    from infra.settings import Settings
    from infra.stack.embedded import EmbeddedStack, free_port

    logging.basicConfig(level=logging.ERROR)
    n = int(os.environ.get("BENCH_N", "300"))
    work_dir = Path(tempfile.mkdtemp(prefix="gradeflow-mwbench-"))
    stack = EmbeddedStack(work_dir / "stack", free_port(), free_port(), free_port(), free_port(), durable=False)
    started_at = datetime.now(UTC)
    try:
        stack.start()
        admin = stack.database_admin_url
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("gradeflow_bench")))
        admin = admin.rsplit("/", 1)[0] + "/gradeflow_bench"
        asyncio.run(migrate(admin, app_password=APP_PASSWORD, log=lambda _: None))
        settings = Settings(env="test", database_url=app_url_from_admin(admin, APP_PASSWORD),
                            redis_url=stack.redis_url, temporal_address=None,
                            rate_limit_submit="1000000/minute", rate_limit_read="1000000/minute")
        report = {"timestamp": started_at.isoformat(timespec="seconds"), **asyncio.run(measure(settings, n))}
    finally:
        stack.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"middleware_overhead-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(report, indent=2)
    out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
