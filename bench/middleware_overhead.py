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
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn

from bench.standalone import bench_settings, migrated_stack, save_report
from bench.stats import percentile

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
    logging.basicConfig(level=logging.ERROR)
    n = int(os.environ.get("BENCH_N", "300"))
    started_at = datetime.now(UTC)
    with migrated_stack("gradeflow-mwbench-", "gradeflow_bench") as (stack, admin):
        report = {"timestamp": started_at.isoformat(timespec="seconds"),
                  **asyncio.run(measure(bench_settings(stack, admin), n))}
    save_report("middleware_overhead", started_at, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
