"""PostgreSQL restarts and outages through the real API: success or 503 + ``Retry-After``, never 500.

A restart terminates every backend of the application role, so each idle pooled connection is
dead: the pool's check must discard them on checkout instead of handing them to a request. A
connection killed in the middle of a request (blocked on a lock, then ``pg_terminate_backend``) and a
database that cannot be reached at all answer 503 ``application/problem+json`` with a positive
integer ``Retry-After`` naming the database, in the routes as in the idempotency middleware, which
never stores such an answer under its key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import websockets
from psycopg.conninfo import conninfo_to_dict
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.db.pools import PoolManager
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import running_server

PROBLEM = "application/problem+json"
PROBLEM_TYPES = ("https://gradeflow.dev/problems/database-unavailable",
                 "https://gradeflow.dev/problems/database-busy")
IDLE_CONNECTIONS = 8
"""Idle pooled connections a restart kills (the API's pool holds at most 10)."""
LOCK_WAIT_SECONDS = 30.0
"""Longest the test waits for its requests to block on the tables it locked."""


@dataclass
class Served:
    """The real app (its state reachable) served by uvicorn, and a client of it."""

    app: Any
    http: httpx.AsyncClient
    url: str


@dataclass
class Tenant:
    """A tenant with one exam and one submission."""

    headers: dict[str, str]
    token: str
    exam_id: str
    submission_id: str


@dataclass
class Call:
    """One request and the status it answers when the database is fine."""

    label: str
    method: str
    path: str
    expected: int
    body: dict[str, Any] | None = None
    key: str | None = None
    """``Idempotency-Key``, if any."""
    extra: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def served(contract_settings, temporal_client, task_queue) -> AsyncIterator[Served]:
    """The real API (real lifespan and pools) on a free port."""
    from api.app import create_app

    app = create_app(contract_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"})
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield Served(app, http, url)


@pytest.fixture
def app_role(pg_url) -> str:
    """The application role's name (the role whose backends a restart kills)."""
    return conninfo_to_dict(pg_url)["user"]


async def _tenant(served: Served, bearer) -> Tenant:
    headers = bearer(f"t-{uuid.uuid4().hex[:12]}")
    exam = await served.http.post("/v1/exams", json=exam_body(), headers=headers)
    assert exam.status_code == 201, exam.text
    exam_id = exam.json()["id"]
    sub = await served.http.post("/v1/submissions", headers=headers,
                                 json={"exam_id": exam_id, "student_id": "s-0", "answers": GOOD_ANSWERS})
    assert sub.status_code == 202, sub.text
    return Tenant(headers, headers["Authorization"].removeprefix("Bearer "), exam_id, sub.json()["submission_id"])


def _submission(t: Tenant) -> dict[str, Any]:
    return {"exam_id": t.exam_id, "student_id": f"s-{uuid.uuid4().hex[:6]}", "answers": GOOD_ANSWERS}


def _key() -> str:
    return f"outage-{uuid.uuid4()}"


def _calls(t: Tenant, copies: int = 1) -> list[Call]:
    """Every kind of request that needs PostgreSQL, ``copies`` times."""
    calls = []
    for _ in range(copies):
        calls += [
            Call("get submission", "GET", f"/v1/submissions/{t.submission_id}", 200),
            Call("get unknown submission", "GET", f"/v1/submissions/{uuid.uuid4()}", 404),
            Call("list submissions", "GET", "/v1/submissions", 200),
            Call("list exams", "GET", "/v1/exams", 200),
            Call("post exam", "POST", "/v1/exams", 201, exam_body()),
            Call("post exam keyed", "POST", "/v1/exams", 201, exam_body(), _key()),
            Call("post submission", "POST", "/v1/submissions", 202, _submission(t)),
            Call("post submission keyed", "POST", "/v1/submissions", 202, _submission(t), _key()),
        ]
    return calls


async def _send(served: Served, t: Tenant, call: Call) -> httpx.Response:
    headers = {**t.headers, **call.extra, **({"Idempotency-Key": call.key} if call.key else {})}
    return await served.http.request(call.method, call.path, json=call.body, headers=headers)


def _not_unavailable(resp: httpx.Response) -> str | None:
    """Why ``resp`` is not a proper "database unavailable" answer (``None`` when it is one)."""
    if resp.status_code != 503:
        return f"status {resp.status_code}: {resp.text[:300]}"
    retry_after = resp.headers.get("retry-after", "")
    if not retry_after.isdigit() or int(retry_after) < 1:
        return f"Retry-After {retry_after!r} is not a positive integer"
    if resp.headers.get("content-type") != PROBLEM:
        return f"content-type {resp.headers.get('content-type')!r}"
    body = resp.json()
    if body.get("status") != 503 or body.get("type") not in PROBLEM_TYPES:
        return f"problem document {body}"
    if "database" not in body.get("detail", "").lower():
        return f"detail does not name the database: {body.get('detail')!r}"
    return None


def _wrong(results: list[tuple[Call, httpx.Response]]) -> list[str]:
    """Every answer that is neither the call's normal success nor a proper 503."""
    return [f"{call.label}: {reason}" for call, resp in results
            if resp.status_code != call.expected and (reason := _not_unavailable(resp)) is not None]


async def _warm(pools: PoolManager, count: int) -> None:
    """Leave ``count`` idle connections in the pool: borrow them together, use them, return them."""
    async with AsyncExitStack() as stack:
        for _ in range(count):
            conn = await stack.enter_async_context(pools.connection())
            await conn.execute("SELECT 1")
    assert pools.stats()["pool_available"] >= count, pools.stats()


async def _restart(admin_url: str, role: str) -> int:
    """Terminate every backend of ``role`` and wait for them to exit, as a PostgreSQL restart does."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
            " WHERE usename = %s AND pid <> pg_backend_pid()", (role,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _lock_waiters(admin_url: str, role: str, count: int) -> list[int]:
    """The pids of ``role``'s backends waiting on a lock, once there are ``count`` of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_SECONDS
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as probe:
        while True:
            cur = await probe.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s"
                                      " AND wait_event_type = 'Lock'", (role,))
            pids = [row[0] for row in await cur.fetchall()]
            if len(pids) >= count:
                return pids
            assert loop.time() < deadline, f"only {len(pids)} of {count} requests blocked on the locks"
            await asyncio.sleep(0.05)


async def _killed_mid_request(served: Served, t: Tenant, admin_url: str, role: str, tables: tuple[str, ...],
                              calls: list[Call]) -> list[tuple[Call, httpx.Response]]:
    """Send ``calls`` while ``tables`` are locked, kill their backends as they wait, then unlock."""
    async with await psycopg.AsyncConnection.connect(admin_url) as admin:
        async with admin.transaction():
            await admin.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            tasks = [asyncio.create_task(_send(served, t, call)) for call in calls]
            pids = await _lock_waiters(admin_url, role, len(calls))
            await admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM unnest(%s::int[]) AS pid", (pids,))
        responses = await asyncio.gather(*tasks)
    return list(zip(calls, responses, strict=True))


async def _retries_run(served: Served, t: Tenant, calls: list[Call]) -> None:
    """Keyed calls answered 503 stored nothing: the same key runs the request now."""
    for call in calls:
        again = await _send(served, t, call)
        assert again.status_code == call.expected, f"{call.label}: {again.status_code} {again.text}"
        assert again.headers.get("idempotent-replayed") is None, call.label


async def test_idle_connections_killed_by_a_restart_are_never_handed_out(served, bearer, pg_admin_url,
                                                                         app_role) -> None:
    t = await _tenant(served, bearer)
    await _warm(served.app.state.pools, IDLE_CONNECTIONS)
    assert await _restart(pg_admin_url, app_role) >= IDLE_CONNECTIONS

    # One request at a time: without a check each would draw one of the dead connections.
    for _ in range(IDLE_CONNECTIONS + 2):
        resp = await served.http.get("/v1/submissions", headers=t.headers)
        assert resp.status_code == 200, resp.text


async def test_restart_under_a_burst_answers_success_or_503_never_500(served, bearer, pg_admin_url,
                                                                      app_role) -> None:
    t = await _tenant(served, bearer)
    await _warm(served.app.state.pools, IDLE_CONNECTIONS)
    assert await _restart(pg_admin_url, app_role) >= IDLE_CONNECTIONS

    calls = _calls(t, copies=4)
    responses = await asyncio.gather(*(_send(served, t, call) for call in calls))
    results = list(zip(calls, responses, strict=True))
    assert [c.label for c, r in results if r.status_code == 500] == []
    assert _wrong(results) == []
    await _retries_run(served, t, [c for c, r in results if c.key and r.status_code == 503])

    # After the burst every route answers normally: no stale connection is left in the pool.
    for call in _calls(t):
        resp = await _send(served, t, call)
        assert resp.status_code == call.expected, f"{call.label}: {resp.status_code} {resp.text}"


async def test_connection_killed_mid_request_is_503_and_the_key_is_not_kept(served, bearer, pg_admin_url,
                                                                             app_role) -> None:
    t = await _tenant(served, bearer)
    # The idempotency middleware's claim and the routes' reads die while they wait on a lock.
    in_claim = [Call("post exam keyed", "POST", "/v1/exams", 201, exam_body(), _key()),
                Call("post submission keyed", "POST", "/v1/submissions", 202, _submission(t), _key())]
    reads = [Call("list submissions", "GET", "/v1/submissions", 200),
             Call("get unknown submission", "GET", f"/v1/submissions/{uuid.uuid4()}", 404)]
    results = await _killed_mid_request(served, t, pg_admin_url, app_role, ("idempotency_cache", "submissions"),
                                        in_claim + reads)
    assert [f"{c.label}: {reason}" for c, r in results if (reason := _not_unavailable(r))] == []

    # The claim succeeds, the route's transaction dies: 503, and the key is released, not stored.
    in_route = [Call("post exam keyed", "POST", "/v1/exams", 201, exam_body(), _key()),
                Call("post submission keyed", "POST", "/v1/submissions", 202, _submission(t), _key()),
                Call("post exam", "POST", "/v1/exams", 201, exam_body())]
    results = await _killed_mid_request(served, t, pg_admin_url, app_role, ("exams",), in_route)
    assert [f"{c.label}: {reason}" for c, r in results if (reason := _not_unavailable(r))] == []

    await _retries_run(served, t, in_claim + in_route)


async def _ws_outcome(url: str) -> int:
    """The HTTP status that refused a WebSocket handshake, or the close code of the connection."""
    try:
        async with websockets.connect(url, open_timeout=30) as ws:
            await asyncio.wait_for(ws.recv(), 30)
            return 101
    except InvalidStatus as exc:
        assert exc.response.headers.get("retry-after", "").isdigit(), exc.response.headers
        return exc.response.status_code
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


@pytest.mark.parametrize("outage", ["unreachable", "pool closed"])
async def test_database_unreachable_answers_503_naming_the_database(served, bearer, services, closed_port,
                                                                    outage: str) -> None:
    t = await _tenant(served, bearer)
    app_pools = served.app.state.pools
    down = PoolManager(f"postgresql://nobody:x@127.0.0.1:{closed_port}/gradeflow", services.redis_url,
                       min_size=1, max_size=2, acquire_timeout=1, name="gradeflow-api-down")
    if outage == "unreachable":
        await down.open(wait=False)
    served.app.state.pools = down
    try:
        calls = [c for c in _calls(t) if c.label != "get submission"]  # that one may be a Redis hit
        responses = await asyncio.gather(*(_send(served, t, call) for call in calls))
        assert [f"{c.label}: {reason}" for c, r in zip(calls, responses, strict=True)
                if (reason := _not_unavailable(r))] == []

        ready = await served.http.get("/v1/health/ready")
        assert ready.status_code == 503 and int(ready.headers["retry-after"]) >= 1, ready.headers

        ws_url = served.url.replace("http", "ws", 1) + f"/v1/ws/submissions/{uuid.uuid4()}?token={t.token}"
        assert await _ws_outcome(ws_url) in (503, 1013)
    finally:
        served.app.state.pools = app_pools
        await down.close(timeout=2)

    await _retries_run(served, t, [c for c in calls if c.key])
