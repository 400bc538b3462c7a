"""With the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans also go out over OTLP/HTTP (protobuf)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from infra.observability.tracing import otlp_configured, setup_tracing
from tests.integration.workflows.harness import gf_settings  # noqa: F401


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A stand-in OTLP/HTTP collector on 127.0.0.1: ``(endpoint, [(path, body)])``."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_are_exported_over_otlp_when_the_endpoint_is_set(gf_settings, collector, monkeypatch):  # noqa: F811
    endpoint, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    settings = gf_settings.model_copy(update={"database_url": None})
    provider = setup_tracing(settings, "otlp-test", set_global=False)
    name = f"otlp-{uuid.uuid4().hex[:8]}"
    with provider.get_tracer("t").start_as_current_span(name, attributes={"gradeflow.tenant_id": "t-otlp"}):
        pass
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert [path for path, _ in received] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(received[0][1])
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert [span.name for span in spans] == [name]
    service = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}["service.name"]
    assert service == "otlp-test"


def test_no_endpoint_no_otlp(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not otlp_configured()
    assert otlp_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
