"""``gradeflow dev`` as a user runs it: everything answers, SIGTERM stops every child, data survives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from infra.stack.embedded import free_port


def _wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def _start(data_dir: Path, ports: dict[str, int], *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADEFLOW_")}
    env.update({f"GRADEFLOW_{k}": str(v) for k, v in ports.items()}, GRADEFLOW_DATA_DIR=str(data_dir))
    return subprocess.Popen([sys.executable, "-m", "infra.cli", "dev", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _read_until_banner(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """``gradeflow dev``'s output up to the end of its "running" banner (children log to the same stdout)."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("gradeflow dev exited before its banner:\n" + "".join(seen))
        seen.append(line)
        if "Press Ctrl-C to stop." in line:
            return "".join(seen)
    raise AssertionError("no banner in time:\n" + "".join(seen))


def _ready_at_banner(ports: dict[str, int]) -> dict[str, int]:
    """Pollers of each worker's task queue and LISTENing relays, as the banner shows."""
    import asyncio

    import psycopg
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.client import Client

    async def pollers() -> dict[str, int]:
        client = await Client.connect(f"127.0.0.1:{ports['TEMPORAL_PORT']}")
        out = {}
        for queue, kind in (("orchestration", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                            ("cognitive", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)):
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=queue), task_queue_type=kind))
            out[queue] = len(resp.pollers)
        return out

    ready = asyncio.run(pollers())
    with psycopg.connect(f"postgresql://postgres:postgres@127.0.0.1:{ports['PG_PORT']}/gradeflow") as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN %'").fetchone()
    ready["relay"] = row[0] if row else 0
    return ready


def _stop(proc: subprocess.Popen[str]) -> tuple[float, str]:
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if len(descendants) < 7:  # postgres, redis, temporal, api, 2 workers, relay
        proc.kill()
        raise AssertionError(f"gradeflow dev is not running its 7 children:\n{proc.communicate()[0]}")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    elapsed = time.monotonic() - started
    gone, alive = psutil.wait_procs(descendants, timeout=2)
    assert not alive, f"orphans left behind: {[p.pid for p in alive]}"
    return elapsed, out


def test_dev_starts_answers_stops_and_keeps_data(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("API_PORT", "PG_PORT", "REDIS_PORT", "TEMPORAL_PORT",
                                             "TEMPORAL_UI_PORT")}
    proc = _start(tmp_path / "data", ports)
    before = ""
    try:
        before = _read_until_banner(proc)
        ready = _ready_at_banner(ports)  # the banner waits for every child, not just the API
        assert ready["orchestration"] >= 1 and ready["cognitive"] >= 1 and ready["relay"] >= 1, ready
        _wait_for(f"http://127.0.0.1:{ports['API_PORT']}/v1/health", proc)
        _wait_for(f"http://127.0.0.1:{ports['TEMPORAL_UI_PORT']}/", proc)
        described = subprocess.run(
            [str(Path(sys.executable).parent / "temporal"), "operator", "namespace", "describe",
             "--namespace", "default", "--address", f"127.0.0.1:{ports['TEMPORAL_PORT']}"],
            capture_output=True, text=True, timeout=20,
        )
        assert described.returncode == 0, described.stderr
        import psycopg

        with psycopg.connect(f"postgresql://postgres:postgres@127.0.0.1:{ports['PG_PORT']}/gradeflow",
                             autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (id, name) VALUES ('smoke', 'kept across restarts')")
    finally:
        elapsed, out = _stop(proc)
    out = before + out
    assert proc.returncode == 0, out
    assert elapsed < 10, f"stopping took {elapsed:.1f}s"
    assert "Temporal Web UI" in out and "OpenAPI docs" in out
    # the "try it" hint, in the banner: the dashboard and the example commands with a demo token
    assert f"Dashboard       http://127.0.0.1:{ports['API_PORT']}/ui" in before, before
    assert "gradeflow submit examples/submission.json --exam $EXAM --watch" in before, before

    proc = _start(tmp_path / "data", ports)
    try:
        _wait_for(f"http://127.0.0.1:{ports['API_PORT']}/v1/health", proc)
        with psycopg.connect(f"postgresql://postgres:postgres@127.0.0.1:{ports['PG_PORT']}/gradeflow") as conn:
            row = conn.execute("SELECT name FROM tenants WHERE id = 'smoke'").fetchone()
        assert row == ("kept across restarts",)
    finally:
        _stop(proc)


def test_dev_runs_several_cognitive_workers(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("API_PORT", "PG_PORT", "REDIS_PORT", "TEMPORAL_PORT",
                                             "TEMPORAL_UI_PORT")}
    proc = _start(tmp_path / "data", ports, "--cognitive-workers", "2")
    try:
        banner = _read_until_banner(proc)
        ready = _ready_at_banner(ports)  # the banner waits for both cognitive processes
        assert ready["cognitive"] >= 2 and ready["orchestration"] >= 1, ready
        assert "(worker-cognitive-2)" in banner, banner
    finally:
        _stop(proc)
    assert proc.returncode == 0


def test_dev_names_the_port_setting_when_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"API_PORT": free_port(), "PG_PORT": port, "REDIS_PORT": free_port(),
                 "TEMPORAL_PORT": free_port(), "TEMPORAL_UI_PORT": free_port()}
        proc = _start(tmp_path / "data", ports)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert f"port {port}" in out and "GRADEFLOW_PG_PORT" in out
    assert "Traceback" not in out
