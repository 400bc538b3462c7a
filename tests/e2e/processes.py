"""Platform processes the end-to-end tests run as subprocesses: stop them, read what they logged."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it is not gone within 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a process log, for an assertion message."""
    return log.read_text(errors="replace")[-chars:]
