"""Metrics, JSON logs and readiness of the real processes, scraped over HTTP after real traffic.

The API, both workers and the relay run as ``gradeflow`` processes (as ``gradeflow dev`` starts them,
each with its metrics ports) on the session's PostgreSQL, Redis and Temporal. Through the API: an
exam, three submissions graded by the workers, reads of their results (Redis hits and misses), a
review override (the saga), a live WebSocket feed held open and one refused by the rate limit. Then
every endpoint is scraped and checked against what happened, and every metric that
``deploy/prometheus/alerts.yml`` and the Grafana dashboard name must be among the exported ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from infra.stack.devserver import start_children, stop_children, wait_http, wait_ready
from infra.stack.embedded import free_port
from tests.integration.api.conftest import exam_body

PENDING_COMPLETED_SQL = """
SELECT count(*) FROM event_outbox
 WHERE status = 'pending' AND payload->>'status' = 'completed'
   AND (event_type = 'submission.graded'
        OR (event_type IN ('submission.status_changed', 'submission.reviewed')
            AND payload->>'from' IS NOT NULL AND payload->>'from' <> 'completed'))"""

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYNTHETIC = frozenset({"up", "scrape_duration_seconds"})
"""Series Prometheus makes itself; no process exports them."""


# --------------------------------------------------------------------------- helpers

def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``{sample name: [(labels, value)]}`` of one endpoint, plus each family's name (no samples needed)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local URL
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    for declared in re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE):  # families with no sample yet
        out.setdefault(declared, [])
    return out


def value(metrics: dict[str, Any], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for sample_labels, v in metrics.get(name, []) if labels.items() <= sample_labels.items())


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (parsed with ``promql-parser``: a syntax error fails the test)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            metric = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            if metric:
                names.add(metric)

    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)  # Grafana's range variables
    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def deploy_expressions() -> list[str]:
    """Every PromQL expression of the alert rules and of the Grafana dashboard."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "gradeflow.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    return exprs


def test_promql_names_are_found_and_labels_are_not():
    expr = ('sum by (kind) (delta(gradeflow_dead_letters{status="open"}[15m])) > 0 and on (kind) '
            'histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket[5m])))')
    assert promql_metric_names(expr) == {"gradeflow_dead_letters", "http_server_request_duration_seconds_bucket"}
    assert len(deploy_expressions()) >= 10


# --------------------------------------------------------------------------- the platform

@pytest.fixture
def platform(services, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The four gradeflow processes on the session's services; their URLs and log folder."""
    ports = {name: free_port() for name in ("api", "orch", "orch_sdk", "cog", "cog_sdk", "relay")}
    env = {**services.env(), "GRADEFLOW_API_PORT": str(ports["api"]), "GRADEFLOW_LOG_FORMAT": "json",
           "GRADEFLOW_METRICS_SAMPLE_INTERVAL": "0.5", "GRADEFLOW_RATE_LIMIT_WEBSOCKET": "1/minute",
           "GRADEFLOW_LOW_CONFIDENCE_THRESHOLD": "0", "GRADEFLOW_DATA_DIR": str(tmp_path / "data"),
           # other tests' leftover queued submissions are not this relay's to start
           "GRADEFLOW_RECONCILE_AFTER_SECONDS": "86400", "PYTHONUNBUFFERED": "1"}
    child_envs = {
        "worker-orchestration": {"GRADEFLOW_WORKER_METRICS_PORT": str(ports["orch"]),
                                 "GRADEFLOW_TEMPORAL_SDK_METRICS_PORT": str(ports["orch_sdk"])},
        "worker-cognitive": {"GRADEFLOW_WORKER_METRICS_PORT": str(ports["cog"]),
                             "GRADEFLOW_TEMPORAL_SDK_METRICS_PORT": str(ports["cog_sdk"])},
        "relay": {"GRADEFLOW_RELAY_METRICS_PORT": str(ports["relay"])},
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    # The session database holds other tests' unpublished events: this relay publishes them too.
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        finals_before = conn.execute(PENDING_COMPLETED_SQL).fetchone()[0]
    procs = start_children(env, log_dir=logs, cwd=REPO, child_envs=child_envs)
    try:
        api = f"http://127.0.0.1:{ports['api']}"
        wait_http(f"{api}/v1/health", procs, timeout=90, log_dir=logs)
        asyncio.run(wait_ready(procs, temporal_address=services.temporal_address, namespace="default",
                               admin_url=services.admin_url, log_dir=logs))
        local = "http://127.0.0.1:{}/metrics".format
        yield {"api": api, "logs": logs, "env": env, "finals_before": finals_before,
               "metrics": {"api": f"{api}/metrics", "worker-orchestration": local(ports["orch"]),
                           "worker-cognitive": local(ports["cog"]), "relay": local(ports["relay"]),
                           "sdk-orchestration": local(ports["orch_sdk"]), "sdk-cognitive": local(ports["cog_sdk"]),
                           **({"temporal": services.temporal_metrics_url} if services.temporal_metrics_url else {})}}
    finally:
        stop_children(procs)


async def _traffic(api: str, env: dict[str, str], tenant: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from infra.security.tokens import mint_token
    from infra.settings import Settings

    settings = Settings(_env_file=None, jwt_secret=env.get("GRADEFLOW_JWT_SECRET", Settings().jwt_secret))
    token = mint_token(settings, tenant=tenant, roles=["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as http:
        exam = await http.post("/v1/exams", json=exam_body())
        assert exam.status_code == 201, exam.text
        exam_id, ids = exam.json()["id"], []
        for student in ("s-1", "s-2", "s-3"):
            resp = await http.post("/v1/submissions", json={"exam_id": exam_id, "student_id": student,
                                                            "answers": {"q1": "b", "q2": 42, "q3": "photosynthesis",
                                                                        "q4": "because for example"}})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["submission_id"])
        feed = await connect(f"{api.replace('http', 'ws')}/v1/ws/submissions/{ids[0]}?token={token}")
        await feed.recv()  # the snapshot: the feed is open
        deadline = time.monotonic() + 90
        while True:
            statuses = [(await http.get(f"/v1/submissions/{sid}")).json()["status"] for sid in ids]
            if all(s == "completed" for s in statuses):
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.3)
        for sid in ids:  # served from the hot copies now
            assert (await http.get(f"/v1/submissions/{sid}")).status_code == 200
        review = await http.post(f"/v1/submissions/{ids[0]}/review",
                                 json={"approve": True, "overrides": {"q1": {"score": 0.5}}, "reason": "metrics test"})
        assert review.status_code in (200, 202), review.text
        refused_code = None
        try:
            second = await connect(f"{api.replace('http', 'ws')}/v1/ws/submissions/{ids[1]}?token={token}")
            try:
                await asyncio.wait_for(second.recv(), 5)
            except Exception as exc:  # noqa: BLE001 - closed by the server with its code
                refused_code = getattr(getattr(exc, "rcvd", None), "code", None)
            await second.close()
        except Exception as exc:  # noqa: BLE001 - refused at the handshake
            refused_code = getattr(getattr(exc, "response", None), "status_code", "handshake")
    return {"ids": ids, "feed": feed, "refused": refused_code}


def _relay_sampled(url: str, finals_before: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape(url)
        if metrics.get("gradeflow_outbox_pending_events") and value(metrics, "gradeflow_submissions_finalized_total",
                                                                    status="completed") >= 3 + finals_before:
            return metrics
        assert time.monotonic() < deadline, "the relay did not publish and sample in time"
        time.sleep(0.3)


def test_metrics_of_every_process_after_real_traffic(platform, tenant_id):
    async def run() -> dict[str, Any]:
        done = await _traffic(platform["api"], platform["env"], tenant_id)
        scraped = {name: await asyncio.to_thread(scrape, url) for name, url in platform["metrics"].items()
                   if name != "relay"}
        scraped["relay"] = await asyncio.to_thread(_relay_sampled, platform["metrics"]["relay"],
                                                   platform["finals_before"])
        await done["feed"].close()
        return {**done, "scraped": scraped}

    result = asyncio.run(run())
    scraped = result["scraped"]
    api, orch, cog, relay = (scraped[n] for n in ("api", "worker-orchestration", "worker-cognitive", "relay"))

    # API: requests by route template and status, pools, the cache, the saga, the live feed, rate limits
    assert value(api, "http_server_request_duration_seconds_count", method="POST", route="/v1/submissions",
                 status="202") == 3
    assert value(api, "http_server_request_duration_seconds_count", method="GET",
                 route="/v1/submissions/{submission_id}", status="200") >= 6
    assert value(api, "pool_connections_max", pool_type="postgres", instance="gradeflow-api") == 10
    assert value(api, "pool_connections_max", pool_type="redis", instance="gradeflow-api") == 50
    assert value(api, "cache_hits_total", cache_layer="redis") >= 3
    assert value(api, "cache_misses_total", cache_layer="redis") >= 1
    assert 0 < value(api, "cache_hit_rate", cache_layer="redis") < 1
    assert value(api, "saga_transaction_duration_seconds_count", saga_type="review_override",
                 status="completed") == 1
    assert value(api, "gradeflow_websocket_feeds_open", route="/v1/ws/submissions/{submission_id}") == 1
    assert result["refused"] is not None
    assert value(api, "gradeflow_rate_limit_refusals_total", route_class="websocket", reason="limit") == 1
    assert value(api, "trace_span_duration_seconds_count", span_kind="http", status="ok") >= 10
    assert value(api, "gradeflow_data_dir_free_bytes") > 0

    # workers: grading, questions per grader, checkpoints, spans by kind, the rubric cache, their pools
    assert value(cog, "gradeflow_grading_duration_seconds_count", outcome="graded") == 3
    assert value(cog, "gradeflow_questions_graded_total") == 12  # 3 submissions x 4 questions
    assert {labels["grader"] for labels, v in cog["gradeflow_questions_graded_total"] if v} >= {"choice", "numeric"}
    assert value(cog, "gradeflow_checkpoint_bytes_written_total") > 0
    stored = value(cog, "gradeflow_checkpoint_bytes_written_total")
    assert value(cog, "gradeflow_checkpoint_payload_bytes_total") >= stored
    assert value(cog, "trace_span_duration_seconds_count", span_kind="node") >= 12 + 9  # grade_question + 3/run
    assert value(orch, "trace_span_duration_seconds_count", span_kind="activity") >= 6
    assert value(cog, "pool_connections_max", pool_type="postgres", instance="gradeflow-checkpoints") >= 2
    assert value(orch, "cache_hits_total", cache_layer="rubric") + value(cog, "cache_hits_total",
                                                                         cache_layer="rubric") >= 1
    assert value(cog, "gradeflow_agent_attempt_retries_total") == 0

    # relay: finals once each, publication lag, the backlog sample
    assert value(relay, "gradeflow_submissions_finalized_total", status="completed") == 3 + platform["finals_before"]
    assert value(relay, "gradeflow_relay_events_published_total", event_type="submission.graded") >= 3
    assert value(relay, "gradeflow_relay_publish_lag_seconds_count") >= 9
    assert relay["gradeflow_outbox_pending_events"] and relay["gradeflow_outbox_oldest_pending_age_seconds"]

    # the Temporal SDK's own endpoints (and the embedded server's)
    for name in ("sdk-orchestration", "sdk-cognitive"):
        assert any(metric.startswith("temporal_") for metric in scraped[name]), name
    if "temporal" in scraped:
        assert scraped["temporal"]

    # every metric the alert rules and the dashboard use is exported by one of the processes
    exported = set().union(*scraped.values())
    named = set().union(*(promql_metric_names(expr) for expr in deploy_expressions())) - SYNTHETIC
    assert named - exported == set(), sorted(named - exported)

    # JSON logs: one object per line, the grading's lines carry trace, tenant and submission
    lines = (platform["logs"] / "worker-cognitive.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    assert len(records) == len([line for line in lines if line.strip()])
    graded = [r for r in records if r.get("submission_id") in result["ids"]]
    assert graded and all(r["tenant_id"] == tenant_id and re.fullmatch(r"[0-9a-f]{32}", r["trace_id"])
                          for r in graded)
    api_lines = [json.loads(line) for line in (platform["logs"] / "api.log").read_text().splitlines() if line.strip()]
    assert any(r["logger"] == "uvicorn.access" for r in api_lines)  # the server's own lines are JSON too
