"""End-to-end benchmark: N submissions of 20 questions through the HTTP API until graded.

The platform runs as in ``gradeflow dev``: the API, the orchestration worker, the cognitive worker
and the outbox relay, each its own process (``python -m infra.cli ...``) pointed at the embedded
stack. The bench creates one exam, then submits ``n`` submissions with at most ``concurrency`` in
flight; each slot POSTs ``/v1/submissions``, opens ``WS /v1/ws/submissions/{id}`` and waits for the
first message announcing a final status (``completed`` / ``needs_review``; pushed, so no poll
interval is added and no poll load is put on the API). Latency is POST sent → final status
received; throughput is submissions / wall time of the whole batch. Afterwards every submission is
read back (stored status vs ``GET /v1/submissions/{id}``) and disagreements are counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from bench.stats import cpu_report, cpu_seconds, history_profile, percentile, summarize
from bench.workload import answers_for, exam_questions, payload_bytes
from infra.stack.devserver import children, start_children, stop_children, wait_http, wait_ready

REPO_ROOT = Path(__file__).resolve().parent.parent

DONE_STATUSES = frozenset({"completed", "needs_review"})
"""Graded: the pipeline finished (needs_review waits for a human, not for the platform)."""
FAILED_STATUSES = frozenset({"failed", "needs_intervention"})
"""The pipeline gave up on the submission."""
SUBMISSION_TIMEOUT = 120.0
"""A submission not graded after this long counts as an error."""
TENANT = "bench-tenant"
"""Tenant all bench data belongs to."""
LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
"""Log level of the platform processes (per-node INFO logs cost CPU on a small machine)."""
SERVER_KEEP_ALIVE_S = 5.0
"""uvicorn's ``timeout_keep_alive`` (its default; ``api.app.uvicorn_config`` keeps it)."""
CLIENT_KEEP_ALIVE_S = 2.0
"""The bench client drops an idle connection well before the server does: otherwise a request sent on
a connection the server is closing at that instant fails (the keep-alive race that killed C ≥ 16)."""

class PlatformMissing(RuntimeError):
    """A piece of the pipeline (workflow, worker, API, relay) is not in the tree yet."""


def check_platform() -> None:
    """Raise :class:`PlatformMissing` naming what cannot be imported."""
    missing = []
    for module, name in [("workflows.grading", "GradingWorkflow"), ("worker", "run_worker"),
                         ("api.app", "create_app"), ("infra.events.relay", "run_relay")]:
        try:
            mod = __import__(module, fromlist=[name])
            getattr(mod, name)
        except Exception as exc:  # noqa: BLE001 - any failure means it has not landed in usable form
            missing.append(f"{module}.{name} ({type(exc).__name__}: {exc})")
    if missing:
        raise PlatformMissing("not importable yet: " + "; ".join(missing))


def auth_headers(tenant: str = TENANT) -> dict[str, str]:
    """Headers that authenticate the bench client: the one place to change when auth changes.

    Sends the dev ``X-Tenant-ID`` header and a bearer token minted with the dev secret (the
    platform processes run with the default dev settings), so it works before and after the
    switch to JWT.
    """
    headers = {"X-Tenant-ID": tenant}
    try:
        from infra.security.tokens import mint_token
        from infra.settings import Settings

        token = mint_token(Settings(), tenant=tenant, roles=["admin", "submitter", "reviewer"],
                           sub="bench", ttl_seconds=3600)
        headers["Authorization"] = f"Bearer {token}"
    except ImportError:
        pass
    return headers


def platform_env(*, database_url: str, admin_url: str, redis_url: str, temporal_address: str,
                 api_port: int, data_dir: Path) -> dict[str, str]:
    """Environment of the platform processes: the embedded stack, no rate limiting in the way."""
    env = dict(os.environ)
    env.update(
        GRADEFLOW_ENV="dev",
        GRADEFLOW_DATA_DIR=str(data_dir),
        GRADEFLOW_DATABASE_URL=database_url,
        GRADEFLOW_DATABASE_ADMIN_URL=admin_url,
        GRADEFLOW_REDIS_URL=redis_url,
        GRADEFLOW_TEMPORAL_ADDRESS=temporal_address,
        GRADEFLOW_API_HOST="127.0.0.1",
        GRADEFLOW_API_PORT=str(api_port),
        GRADEFLOW_RATE_LIMIT_SUBMIT="1000000/minute",
        GRADEFLOW_RATE_LIMIT_READ="1000000/minute",
        GRADEFLOW_RATE_LIMIT_WEBSOCKET="1000000/minute",
        GRADEFLOW_LOG_LEVEL=LOG_LEVEL,
        PYTHONUNBUFFERED="1",
    )
    return env


def _final_status(message: dict[str, Any]) -> str | None:
    """The final status a WebSocket message announces, if any."""
    payload = message.get("payload") or {}
    status = payload.get("status") if isinstance(payload, dict) else None
    return status if status in DONE_STATUSES or status in FAILED_STATUSES else None


async def _watch(ws_url: str, sid: str, started: float) -> tuple[float, str]:
    """Wait on the submission's WebSocket for a final status; return (latency s, status)."""
    headers = auth_headers()
    async with ws_connect(f"{ws_url}/v1/ws/submissions/{sid}", additional_headers=headers,
                          open_timeout=10) as ws:
        async for raw in ws:
            status = _final_status(json.loads(raw))
            if status is not None:
                return time.perf_counter() - started, status
    raise RuntimeError(f"live feed of {sid} closed before a final status")


async def _grade_one(client: httpx.AsyncClient, ws_url: str, exam_id: str, student: str,
                     answers: dict[str, Any]) -> tuple[float, float, str, str]:
    """Submit one submission and watch it; return (latency s, POST duration s, final status, id)."""
    started = time.perf_counter()
    resp = await client.post("/v1/submissions", json={"exam_id": exam_id, "student_id": student, "answers": answers})
    posted = time.perf_counter() - started
    if resp.status_code != 202:
        raise RuntimeError(f"POST /v1/submissions -> {resp.status_code}: {resp.text[:300]}")
    sid = resp.json()["submission_id"]
    try:
        latency, status = await asyncio.wait_for(_watch(ws_url, sid, started), SUBMISSION_TIMEOUT)
    except TimeoutError:
        progress = await client.get(f"/v1/submissions/{sid}/progress")
        raise TimeoutError(f"submission {sid}: no final status on its WebSocket within {SUBMISSION_TIMEOUT:.0f}s; "
                           f"progress {progress.status_code}: {progress.text[:400]}") from None
    return latency, posted, status, sid


def client_limits(concurrency: int) -> httpx.Limits:
    """Connection limits of the bench's HTTP client: enough connections, keep-alive below the server's."""
    return httpx.Limits(max_connections=concurrency * 2 + 4, max_keepalive_connections=concurrency * 2 + 4,
                        keepalive_expiry=CLIENT_KEEP_ALIVE_S)


async def _verify(client: httpx.AsyncClient, ids: list[str], questions: int) -> dict[str, int]:
    """Read every submission back: stored status (progress endpoint) vs ``GET /v1/submissions/{id}``."""
    counts: Counter[str] = Counter()
    for sid in ids:
        stored = (await client.get(f"/v1/submissions/{sid}/progress")).json().get("status")
        view = (await client.get(f"/v1/submissions/{sid}")).json()
        counts[f"stored_{stored}"] += 1
        if view.get("status") != stored:
            counts["get_status_disagrees_with_stored"] += 1
        if stored in DONE_STATUSES and len(view.get("results") or []) != questions:
            counts["get_results_incomplete"] += 1
    return dict(counts)


async def _api_cpu_batch(client: httpx.AsyncClient, ws_url: str, exam_id: str, answers: list[dict[str, Any]], *,
                         c: int, count: int, pids: dict[str, int], log: Callable[[str], None]) -> dict[str, Any]:
    """Grade ``count`` submissions at concurrency ``c`` (one open feed each); the API's CPU per submission."""
    gate = asyncio.Semaphore(c)
    latencies: list[float] = []
    posts: list[float] = []

    async def slot(i: int) -> None:
        async with gate:
            latency, posted, _, _ = await _grade_one(client, ws_url, exam_id, f"probe-c{c}-{i}", answers[i])
            latencies.append(latency)
            posts.append(posted)

    api = {"api": pids["api"]} if "api" in pids else {}
    before = cpu_seconds(api)
    started = time.perf_counter()
    await asyncio.gather(*(slot(i) for i in range(count)))
    wall = time.perf_counter() - started
    used = cpu_seconds(api).get("api", 0.0) - before.get("api", 0.0)
    out = {"submissions": count, "throughput_per_s": round(count / wall, 3),
           "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
           "submit_p50_ms": round(percentile(posts, 0.5) * 1000, 1),
           "api_cpu_ms_per_submission": round(used / count * 1000, 1) if api else None}
    log(f"e2e: API CPU at C={c}: {out['api_cpu_ms_per_submission']} ms/submission, "
        f"{out['throughput_per_s']:.2f} submissions/s")
    return out


RoundHook = Callable[[int], Awaitable[None]]
"""Awaited after each measured round with its index (the bench runs the bare reference there)."""


async def drive(api_url: str, *, n: int, concurrency: int, rounds: int = 1, warmup: int = 2,
                pids: dict[str, int] | None = None, after_round: RoundHook | None = None,
                questions_per_exam: int = 20, api_cpu_probe: dict[int, int] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Create the exam, warm up, then grade ``n`` submissions at ``concurrency``, ``rounds`` times.

    Figures pool all rounds: throughput = submissions ÷ summed batch wall time, latency
    percentiles over every submission. ``pids`` name the processes whose CPU time is counted
    during the batches. The first warm-up submission is the first one after the platform
    started (``first_submission_ms``). ``api_cpu_probe`` (concurrency → submissions), after the
    rounds: the API process's CPU per submission at each concurrency.
    """
    questions = exam_questions(questions_per_exam)
    probe = api_cpu_probe or {}
    extra = sum(probe.values())
    all_answers = [answers_for(questions, seed=i) for i in range(max(n + warmup, extra))]
    limits = client_limits(max([concurrency, *probe]))
    latencies: list[float] = []
    posts: list[float] = []
    statuses: Counter[str] = Counter()
    ids: list[str] = []
    walls: list[float] = []
    cpu_used: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=api_url, headers=auth_headers(), timeout=30.0, limits=limits) as client:
        resp = await client.post("/v1/exams", json={
            "title": "bench exam", "questions": [q.model_dump(mode="json") for q in questions]})
        if resp.status_code != 201:
            raise RuntimeError(f"POST /v1/exams -> {resp.status_code}: {resp.text[:300]}")
        exam_id = resp.json()["id"]
        ws_url = "ws" + api_url.removeprefix("http")
        warm: list[tuple[float, float]] = []
        for i in range(warmup):
            latency, posted, status, _ = await _grade_one(client, ws_url, exam_id, f"warmup-{i}", all_answers[n + i])
            warm.append((latency, posted))
            log(f"e2e: warm-up submission {i + 1}/{warmup}: {status} in {latency * 1000:.0f} ms")
        for r in range(rounds):
            gate = asyncio.Semaphore(concurrency)
            done = 0

            async def slot(i: int, r: int = r, gate: asyncio.Semaphore = gate) -> None:
                nonlocal done
                async with gate:
                    latency, posted, status, sid = await _grade_one(
                        client, ws_url, exam_id, f"student-{r}-{i}", all_answers[i])
                    latencies.append(latency)
                    posts.append(posted)
                    statuses[status] += 1
                    ids.append(sid)
                    done += 1
                    if done % 10 == 0:
                        log(f"e2e round {r + 1}/{rounds}: {done}/{n} graded")

            cpu_before = cpu_seconds(pids or {})
            wall_started = time.perf_counter()
            await asyncio.gather(*(slot(i) for i in range(n)))
            walls.append(time.perf_counter() - wall_started)
            for name, v in cpu_seconds(pids or {}).items():
                cpu_used[name] = cpu_used.get(name, 0.0) + v - cpu_before.get(name, 0.0)
            log(f"e2e round {r + 1}/{rounds}: {n / walls[-1]:.2f} submissions/s")
            if after_round is not None:
                await after_round(r)
        api_cpu: dict[str, Any] = {}
        for c, count in probe.items():
            api_cpu[str(c)] = await _api_cpu_batch(client, ws_url, exam_id, all_answers, c=c, count=count,
                                                   pids=pids or {}, log=log)
        log("e2e: reading every submission back")
        verify = await _verify(client, ids, len(questions))
    failed = sum(statuses[s] for s in FAILED_STATUSES)
    if failed:
        raise RuntimeError(f"{failed} submissions failed: {dict(statuses)}")
    wall = sum(walls)
    result: dict[str, Any] = {
        **summarize(latencies, wall),
        "rounds": rounds,
        "throughput_per_round": [round(n / w, 3) for w in walls],
        "submit_p50_ms": round(percentile(posts, 0.5) * 1000, 1),
        "statuses": dict(statuses),
        "answers_bytes_per_submission": payload_bytes(all_answers[0]),
        "completion_signal": "WebSocket /v1/ws/submissions/{id}: first message with a final status",
        "read_back": verify,
        "warmup": warmup,
        "questions": len(questions),
        "sample_submission_id": ids[0],
    }
    if warm:
        result["first_submission"] = {
            "post_ms": round(warm[0][1] * 1000, 1),
            "post_ratio_vs_p50": round(warm[0][1] / percentile(posts, 0.5), 3),
            "latency_ms": round(warm[0][0] * 1000, 1),
            "latency_ratio_vs_p50": round(warm[0][0] / percentile(latencies, 0.5), 3),
            "note": "the first warm-up submission: the first one after every platform process is ready "
                    "(the exam is created just before it), vs the p50 of the measured rounds",
        }
    if api_cpu:
        result["api_cpu_by_concurrency"] = api_cpu
        if warm and "1" in api_cpu:  # the first POST against a steady one at the same concurrency
            result["first_submission"]["post_ratio_vs_c1_p50"] = round(
                warm[0][1] * 1000 / api_cpu["1"]["submit_p50_ms"], 3)
        lo, hi = min(probe), max(probe)
        if lo != hi and api_cpu[str(lo)]["api_cpu_ms_per_submission"]:
            result["api_cpu_ratio_high_vs_low_c"] = round(
                api_cpu[str(hi)]["api_cpu_ms_per_submission"] / api_cpu[str(lo)]["api_cpu_ms_per_submission"], 3)
    if cpu_used:
        result["cpu"] = cpu_report({}, cpu_used, items=len(latencies), wall_s=wall, cpus=os.cpu_count() or 1)
    return result


async def run_e2e(*, database_url: str, admin_url: str, redis_url: str, temporal_address: str,
                  work_dir: Path, n: int, concurrency: int, rounds: int = 1, stack_pids: dict[str, int] | None = None,
                  after_round: RoundHook | None = None, questions: int = 20, cognitive_workers: int = 1,
                  api_cpu_probe: dict[int, int] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the platform (``cognitive_workers`` cognitive processes) against the stack, drive it, stop it."""
    from infra.stack.embedded import free_port

    check_platform()
    port = free_port()
    env = platform_env(database_url=database_url, admin_url=admin_url, redis_url=redis_url,
                       temporal_address=temporal_address, api_port=port, data_dir=work_dir)
    log_dir = work_dir / "platform-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    procs = start_children(env, log_dir=log_dir, cwd=REPO_ROOT, cognitive_workers=cognitive_workers)
    try:
        await asyncio.to_thread(wait_http, f"{api_url}/v1/health", procs, 90.0, log_dir=log_dir)
        await wait_ready(procs, temporal_address=temporal_address, namespace="default", admin_url=admin_url,
                         timeout=90.0, log_dir=log_dir)
        log(f"e2e: API, {1 + cognitive_workers} workers and relay up in {time.monotonic() - started:.1f}s; "
            f"logs in {log_dir}")
        pids = {**(stack_pids or {}), **{name: p.pid for name, p in procs.items()}}
        result = await drive(api_url, n=n, concurrency=concurrency, rounds=rounds, pids=pids,
                             after_round=after_round, questions_per_exam=questions, api_cpu_probe=api_cpu_probe,
                             log=log)
        dead = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"platform processes died during the run: {dead} (logs in {log_dir})")
        result["processes"] = [name for name, _ in children(cognitive_workers)]
        result["cognitive_workers"] = cognitive_workers
        try:
            from temporalio.client import Client

            temporal = await Client.connect(temporal_address)
            result["history"] = await history_profile(temporal, f"grade-{result.pop('sample_submission_id')}")
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            result["history"] = f"unavailable: {exc!r}"
        result["log_level"] = LOG_LEVEL
        return result
    finally:
        await asyncio.to_thread(stop_children, procs, 10.0)
