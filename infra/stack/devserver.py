"""``gradeflow dev``: the embedded stack plus every gradeflow process, supervised as one.

Starts PostgreSQL, Redis and the Temporal dev server (with Web UI) under the data folder, applies
migrations, then runs the API, both workers and the outbox relay as child processes. The "running"
banner prints once every child is ready: the API answers ``/v1/health``, each worker process polls
its task queue (Temporal's ``DescribeTaskQueue`` lists a poller with that process's identity) and the
relay holds its ``LISTEN`` connection; it ends with a "try it" hint (dashboard, docs, Temporal Web UI
and the example commands with a demo token, :mod:`infra.stack.try_it`). SIGINT or SIGTERM stops
all of it within 10 s; a child that dies takes the rest down with a clear message.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from infra.constants import COGNITIVE_QUEUE, ORCHESTRATION_QUEUE
from infra.db.migrate import app_url_from_admin, migrate
from infra.settings import Settings
from infra.stack.embedded import EmbeddedStack, EmbeddedStackError, die_with_parent, ensure_port_free, free_port
from infra.stack.metrics_ports import child_metrics_env, metrics_banner, metrics_urls
from infra.stack.try_it import demo_token, try_it_hint

DATABASE_NAME = "gradeflow"
CHILD_STOP_SECONDS = 5.0
CREATE_DATABASE_SQL = "CREATE DATABASE {name}"
DATABASE_EXISTS_SQL = "SELECT 1 FROM pg_database WHERE datname = %s"
RELAY_LISTENING_SQL = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND query ILIKE 'LISTEN %%'")
"""Backends holding a LISTEN: the outbox relay's notification connection (``infra.events.relay``)."""
READY_TIMEOUT = 120.0
"""Seconds every child has to become ready before ``gradeflow dev`` gives up."""
WORKER_QUEUES = {"worker-orchestration": (ORCHESTRATION_QUEUE, "workflow"),
                 "worker-cognitive": (COGNITIVE_QUEUE, "activity")}
"""Child -> (task queue, kind of tasks) it polls once ready."""

CHILDREN: list[tuple[str, list[str]]] = [
    ("api", ["api"]),
    ("worker-orchestration", ["worker", "--queue", "orchestration"]),
    ("worker-cognitive", ["worker", "--queue", "cognitive"]),
    ("relay", ["relay"]),
]
COGNITIVE_CHILD = "worker-cognitive"
"""Name of the (first) cognitive worker child; more are ``worker-cognitive-2``, ``-3``, ..."""


def children(cognitive_workers: int = 1) -> list[tuple[str, list[str]]]:
    """:data:`CHILDREN` with ``cognitive_workers`` cognitive worker processes (at least 1).

    Several processes poll the ``cognitive`` task queue side by side, as production replicas do:
    grading runs are CPU-bound Python, and one process is one event loop on one core.
    """
    out: list[tuple[str, list[str]]] = []
    for name, argv in CHILDREN:
        out.append((name, argv))
        if name == COGNITIVE_CHILD:
            out.extend((f"{COGNITIVE_CHILD}-{i}", argv) for i in range(2, max(1, cognitive_workers) + 1))
    return out


def _worker_queue(name: str) -> tuple[str, str]:
    """(task queue, kind of tasks) a worker child polls once ready."""
    return WORKER_QUEUES[COGNITIVE_CHILD if name.startswith(COGNITIVE_CHILD) else name]


def _say(message: str) -> None:
    print(f"[gradeflow] {message}", flush=True)


def ensure_database(admin_url: str, name: str = DATABASE_NAME) -> str:
    """Create database ``name`` if missing; return the admin URL pointing at it."""
    from urllib.parse import urlsplit, urlunsplit

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute(DATABASE_EXISTS_SQL, (name,)).fetchone() is None:
            conn.execute(sql.SQL(CREATE_DATABASE_SQL).format(name=sql.Identifier(name)))
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def child_env(settings: Settings, stack: EmbeddedStack, admin_url: str) -> dict[str, str]:
    """Environment that points a gradeflow process at the embedded stack."""
    env = dict(os.environ)
    env.update(
        GRADEFLOW_DATABASE_URL=app_url_from_admin(admin_url, settings.app_db_password),
        GRADEFLOW_DATABASE_ADMIN_URL=admin_url,
        GRADEFLOW_REDIS_URL=stack.redis_url,
        GRADEFLOW_TEMPORAL_ADDRESS=stack.temporal_address,
        PYTHONUNBUFFERED="1",
    )
    return env


def start_children(env: dict[str, str], *, log_dir: Path | None = None, cwd: Path | None = None,
                   child_envs: Mapping[str, Mapping[str, str]] | None = None,
                   cognitive_workers: int = 1) -> dict[str, subprocess.Popen[bytes]]:
    """Start the API, both workers and the relay (``gradeflow`` subcommands) with ``env``.

    Args:
        env: environment of the children (points them at the services).
        log_dir: each child logs to ``log_dir/<name>.log``; ``None``: they share our stdout/stderr.
        cwd: working directory of the children.
        child_envs: per child name, variables added to ``env`` (e.g. its metrics ports).
        cognitive_workers: how many cognitive worker processes (see :func:`children`).

    """
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, argv in children(cognitive_workers):
        out = open(log_dir / f"{name}.log", "ab") if log_dir else None  # noqa: SIM115 - closed below
        try:
            procs[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "infra.cli", *argv], env={**env, **(child_envs or {}).get(name, {})},
                cwd=cwd, stdout=out,
                stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL if out else None,
                preexec_fn=die_with_parent,
            )
        finally:
            if out:
                out.close()
    return procs


def wait_http(url: str, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 60.0, *,
              log_dir: Path | None = None) -> None:
    """Wait until ``url`` answers 200 while every child stays alive.

    Raises:
        EmbeddedStackError: a child exited (with its log's tail when ``log_dir`` is given) or the
            URL did not answer within ``timeout``.

    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_children(procs, log_dir=log_dir)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local URL
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise EmbeddedStackError(f"{url} did not answer within {timeout:.0f}s")


def check_children(procs: dict[str, subprocess.Popen[bytes]], *, log_dir: Path | None = None) -> None:
    """Raise :class:`EmbeddedStackError` (with the log's tail when ``log_dir`` is given) if a child exited."""
    for name, proc in procs.items():
        if proc.poll() is not None:
            tail = ""
            if log_dir and (log_dir / f"{name}.log").exists():
                tail = ":\n" + (log_dir / f"{name}.log").read_text(errors="replace")[-1500:]
            raise EmbeddedStackError(f"{name} exited with code {proc.returncode} during start-up{tail}")


async def _polls(client: object, namespace: str, queue: str, kind: str, pid: int) -> bool:
    """Whether process ``pid`` polls ``queue`` for ``kind`` tasks (its default identity is ``<pid>@host``)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    queue_type = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if kind == "workflow"
                  else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
    response = await client.workflow_service.describe_task_queue(  # type: ignore[attr-defined]
        DescribeTaskQueueRequest(namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=queue_type))
    return any(poller.identity.startswith(f"{pid}@") for poller in response.pollers)


async def _relay_listens(admin_url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        row = await (await conn.execute(RELAY_LISTENING_SQL)).fetchone()
    return bool(row and row[0])


async def wait_ready(procs: dict[str, subprocess.Popen[bytes]], *, temporal_address: str, namespace: str,
                     admin_url: str, timeout: float = READY_TIMEOUT, log_dir: Path | None = None) -> None:
    """Wait until each worker child polls its task queue and the relay listens, while every child lives.

    Raises:
        EmbeddedStackError: a child exited, or one was not ready within ``timeout``.

    """
    from temporalio.client import Client

    deadline = time.monotonic() + timeout
    client = await Client.connect(temporal_address, namespace=namespace)
    pending = {name for name in procs if name in WORKER_QUEUES or name.startswith(COGNITIVE_CHILD) or name == "relay"}
    while pending:
        check_children(procs, log_dir=log_dir)
        for name in sorted(pending):
            try:
                if name == "relay":
                    ready = await _relay_listens(admin_url)
                else:
                    queue, kind = _worker_queue(name)
                    ready = await _polls(client, namespace, queue, kind, procs[name].pid)
            except Exception:  # noqa: BLE001 - not answering yet counts as not ready
                ready = False
            if ready:
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise EmbeddedStackError(f"{', '.join(sorted(pending))} not ready within {timeout:.0f}s")
        if pending:
            await asyncio.sleep(0.2)


def stop_children(procs: dict[str, subprocess.Popen[bytes]], timeout: float = CHILD_STOP_SECONDS) -> None:
    """SIGTERM every child, then kill what is still alive after ``timeout`` seconds."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, proc in procs.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop in {timeout:g}s; killing it")
            proc.kill()
            proc.wait()


def run_dev(settings: Settings, *, cognitive_workers: int = 1) -> int:
    """Run the whole platform on the embedded stack until SIGINT/SIGTERM; return the exit code.

    ``cognitive_workers`` cognitive worker processes poll the ``cognitive`` queue side by side.
    """
    started = time.monotonic()
    data_dir = Path(settings.data_dir).resolve()
    stack = EmbeddedStack(
        data_dir, settings.pg_port, settings.redis_port, settings.temporal_port, settings.temporal_ui_port,
        durable=True, log=_say, temporal_metrics_port=settings.temporal_metrics_port,
    )
    ensure_port_free(settings.api_port, "GRADEFLOW_API_PORT")
    stop_requested = False

    def _request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    _say(f"starting the embedded stack under {data_dir}")
    stack.start()
    try:
        admin_url = ensure_database(stack.database_admin_url)
        asyncio.run(migrate(admin_url, app_password=settings.app_db_password, log=_say))
        env = child_env(settings, stack, admin_url)
        metrics_env = child_metrics_env()
        for name, _ in children(cognitive_workers):
            if name.startswith(f"{COGNITIVE_CHILD}-"):  # the extra cognitive workers: free ports
                metrics_env[name] = {setting: str(free_port()) for setting in metrics_env[COGNITIVE_CHILD]}
        procs.update(start_children(env, child_envs=metrics_env, cognitive_workers=cognitive_workers))
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        wait_http(f"{api_url}/v1/health", procs)
        asyncio.run(wait_ready(procs, temporal_address=stack.temporal_address, namespace=settings.temporal_namespace,
                               admin_url=admin_url))
        elapsed = time.monotonic() - started
        grader_delay = settings.demo_grader_delay_seconds
        print(
            "\n"
            f"  gradeflow is running (started in {elapsed:.1f}s)\n"
            f"    API             {api_url}\n"
            f"    OpenAPI docs    {api_url}/docs\n"
            f"    Temporal Web UI {stack.temporal_ui_url}\n"
            f"{metrics_banner(metrics_urls(api_url, metrics_env, stack.temporal_metrics_url))}"
            f"    data            {data_dir}\n"
            "\n"
            f"{try_it_hint(api_url, stack.temporal_ui_url, demo_token(settings), grader_delay=grader_delay)}"
            "\n"
            "  Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stop_requested:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    _say(f"{name} exited with code {proc.returncode}; stopping everything")
                    return 1
            time.sleep(0.2)
        _say("stopping")
        return 0
    finally:
        stop_children(procs)
        stack.stop(timeout=4.0)
        _say(f"stopped after {time.monotonic() - started:.1f}s")
