"""The processes a chaos run controls: the embedded stack's servers and the ``gradeflow`` processes.

:class:`RestartableStack` is :class:`infra.stack.embedded.EmbeddedStack` plus stopping and starting
one server at a time, on the same data folder and port: PostgreSQL keeps its ``pgdata`` (a fast
shutdown, then the same ``postgres`` command), Redis its folder and append-only file (so the
Streams survive a restart) and the Temporal dev server its SQLite file (``--db-filename``), so
workflows survive a restart. :class:`Platform` runs the API, both workers and the relay as
``gradeflow`` processes (``infra.stack.devserver``'s children) and kills or restarts one of them by
PID. Every process either class starts is stopped by PID in its ``stop``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from infra.stack.devserver import CHILDREN, start_children, stop_children, wait_http
from infra.stack.embedded import EmbeddedStack, die_with_parent

SERVICES = ("postgres", "redis", "temporal")
"""Servers of the embedded stack, in start order."""
STOP_TIMEOUT = 30.0
"""Longest wait for a server to exit after its stop signal before it is killed."""


class RestartableStack(EmbeddedStack):
    """The embedded stack, each server of which can be stopped and started again on its own."""

    def pids(self) -> dict[str, int]:
        """PID of each running server, by name."""
        return {name: proc.pid for name, proc in self._procs if proc.poll() is None}

    def running(self, name: str) -> bool:
        """Whether server ``name`` is running."""
        return name in self.pids()

    def stop_service(self, name: str, *, sig: signal.Signals = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> None:
        """Stop server ``name`` with ``sig`` (SIGINT: PostgreSQL's fast shutdown); kill it after ``timeout``."""
        for entry in list(self._procs):
            proc_name, proc = entry
            if proc_name != name:
                continue
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.log(f"{name} did not stop within {timeout:.0f}s; killing it")
                    proc.kill()
                    proc.wait()
            self._procs.remove(entry)

    def start_service(self, name: str) -> None:
        """Start server ``name`` again on the same data folder and port; wait until it answers."""
        if name not in SERVICES:
            raise ValueError(f"unknown service {name!r}")
        if self.running(name):
            return
        started = time.monotonic()
        {"postgres": self._start_postgres, "redis": self._start_redis, "temporal": self._start_temporal}[name]()
        self.log(f"{name} up again on the same port ({time.monotonic() - started:.1f}s)")

    def ensure_up(self) -> None:
        """Start every server that is not running (after a scenario that failed mid-fault)."""
        for name in SERVICES:
            if not self.running(name):
                self.start_service(name)


class Platform:
    """The API, both workers and the relay, each its own ``gradeflow`` process (as ``gradeflow dev``).

    Args:
        env: environment of the processes (see :func:`bench.e2e.platform_env`).
        log_dir: each process appends to ``log_dir/<name>.log`` (restarts included).
        cwd: working directory.
        api_url: base URL of the API (its health route is awaited on start).
        log: progress line sink.

    """

    def __init__(self, env: dict[str, str], log_dir: Path, cwd: Path, api_url: str,
                 log: Callable[[str], None] = print) -> None:
        self.env = env
        self.log_dir = log_dir
        self.cwd = cwd
        self.api_url = api_url
        self.log = log
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.held: set[str] = set()
        """Processes a fault has killed on purpose (not respawned by :meth:`supervise`)."""
        self.exits: list[dict[str, object]] = []
        """Processes that exited on their own (name, exit code), respawned by :meth:`supervise`."""
        self._argv = dict(CHILDREN)
        self._lock = threading.RLock()  # kill/respawn (event loop) vs supervise (a worker thread)

    def start(self, timeout: float = 120.0) -> None:
        """Start all four processes and wait until the API answers."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = start_children(self.env, log_dir=self.log_dir, cwd=self.cwd)
        wait_http(f"{self.api_url}/v1/health", self.procs, timeout, log_dir=self.log_dir)

    def pids(self) -> dict[str, int]:
        """PID of each live process, by name."""
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def dead(self) -> dict[str, int | None]:
        """Processes that exited on their own (name → exit code)."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def kill(self, name: str) -> int:
        """SIGKILL process ``name`` by PID and reap it; return the PID killed (held until :meth:`respawn`)."""
        with self._lock:
            self.held.add(name)
            proc = self.procs[name]
            pid = proc.pid
            if proc.poll() is None:
                os.kill(pid, signal.SIGKILL)
            proc.wait(30)
            return pid

    def respawn(self, name: str) -> int:
        """Start process ``name`` again (same command and environment as the first start); return its PID.

        The command line is :data:`infra.stack.devserver.CHILDREN`'s, run like ``start_children`` runs it.
        """
        with self._lock:
            old = self.procs.get(name)
            if old is not None and old.poll() is None:
                raise RuntimeError(f"{name} is still running (pid {old.pid})")
            self.held.discard(name)
            with open(self.log_dir / f"{name}.log", "ab") as out:
                self.procs[name] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", "infra.cli", *self._argv[name]], env=self.env, cwd=self.cwd,
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                )
            return self.procs[name].pid

    def supervise(self) -> list[str]:
        """Respawn, like a process supervisor, every process that exited on its own; return their names."""
        respawned = []
        with self._lock:
            dead = [(name, proc) for name, proc in self.procs.items()
                    if name not in self.held and proc.poll() is not None]
        for name, proc in dead:
            with self._lock:
                if name in self.held or self.procs.get(name) is not proc:
                    continue
                self.exits.append({"process": name, "exit_code": proc.returncode})
                self.log(f"{name} exited on its own (code {proc.returncode}); respawning it:\n"
                         f"{self.log_tail(name, 800)}")
                self.respawn(name)
                respawned.append(name)
        return respawned

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every process by PID, kill what is left after ``timeout``."""
        with self._lock:
            self.held.update(self.procs)  # no respawn from here on
            stop_children(self.procs, timeout)

    def log_tail(self, name: str, chars: int = 1500) -> str:
        """The end of process ``name``'s log."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
