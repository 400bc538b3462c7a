"""Metrics ports of ``gradeflow dev``'s children: pinned when free, else any free port.

Each worker process gets a port for gradeflow's metrics and one for the Temporal SDK's; the relay
gets one; the API serves ``/metrics`` on its own port and the Temporal dev server on
``GRADEFLOW_TEMPORAL_METRICS_PORT``. The pinned ports are the ones ``deploy/prometheus/prometheus.yml``
scrapes; a taken one is replaced by a free one, and the banner prints whatever was chosen.
"""

from __future__ import annotations

from collections.abc import Mapping

from infra.stack.embedded import free_port

WORKER_PORT = "GRADEFLOW_WORKER_METRICS_PORT"
SDK_PORT = "GRADEFLOW_TEMPORAL_SDK_METRICS_PORT"
RELAY_PORT = "GRADEFLOW_RELAY_METRICS_PORT"

DEV_METRICS_PORTS: Mapping[str, Mapping[str, int]] = {
    "worker-orchestration": {WORKER_PORT: 9101, SDK_PORT: 9201},
    "worker-cognitive": {WORKER_PORT: 9102, SDK_PORT: 9202},
    "relay": {RELAY_PORT: 9103},
}
"""Child name → metrics settings and their pinned ports."""


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def child_metrics_env(pinned: Mapping[str, Mapping[str, int]] = DEV_METRICS_PORTS) -> dict[str, dict[str, str]]:
    """Per child, the metrics settings to add to its environment (pinned ports, or free ones)."""
    return {child: {name: str(port if _port_free(port) else free_port()) for name, port in ports.items()}
            for child, ports in pinned.items()}


def metrics_urls(api_url: str, child_envs: Mapping[str, Mapping[str, str]], temporal_metrics_url: str,
                 host: str = "127.0.0.1") -> list[tuple[str, str]]:
    """``(what, url)`` of every metrics endpoint, API first, Temporal server last."""
    urls = [("API", f"{api_url}/metrics")]
    for child, env in child_envs.items():
        for setting, what in ((WORKER_PORT, child), (RELAY_PORT, child), (SDK_PORT, f"{child} (Temporal SDK)")):
            if env.get(setting):
                urls.append((what, f"http://{host}:{env[setting]}/metrics"))
    urls.append(("Temporal server", temporal_metrics_url))
    return urls


def metrics_banner(urls: list[tuple[str, str]]) -> str:
    """The banner's metrics lines (each ends with a newline)."""
    lines = []
    for i, (what, url) in enumerate(urls):
        lines.append(f"    {'Metrics' if i == 0 else '':<15} {url}  ({what})\n")
    return "".join(lines)
