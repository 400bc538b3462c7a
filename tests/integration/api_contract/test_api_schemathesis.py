"""schemathesis against the app's own OpenAPI: bounded examples per operation with a valid token;
no 5xx, and every response matches its documented status, content type, headers and schema."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.security.tokens import ROLES, mint_token
from tests.integration.api.conftest import exam_body
from tests.integration.api.server import running_server
from tests.integration.api_contract.fixtures import GENEROUS, new_tenant

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def live_api(app_settings) -> Iterator[str]:
    """The real app on uvicorn in its own thread and event loop (schemathesis calls it synchronously)."""
    from api.app import create_app

    settings = app_settings.model_copy(update={"rate_limit_submit": GENEROUS, "rate_limit_read": GENEROUS})
    found: dict[str, str] = {}
    stop = threading.Event()

    def run() -> None:
        async def main() -> None:
            async with running_server(create_app(settings)) as url:
                found["url"] = url
                await asyncio.to_thread(stop.wait)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while "url" not in found:
        assert thread.is_alive() and time.monotonic() < deadline, "API did not start"
        time.sleep(0.05)
    yield found["url"]
    stop.set()
    thread.join(20)


def test_every_operation_honours_its_schema(live_api, app_settings) -> None:
    tenant = new_tenant()
    token = mint_token(app_settings, tenant=tenant, roles=ROLES, sub="schemathesis")
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{live_api}/v1/exams", json=exam_body(), headers=headers, timeout=30)
    assert created.status_code == 201, created.text

    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /v1/submissions", "GET /v1/exams", "POST /v1/submissions",
                                                "POST /v1/exams", "GET /v1/submissions/{submission_id}"}
    failures: list[str] = []
    for operation in operations:
        @hsettings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:  # noqa: ANN001
            case.call_and_validate(base_url=live_api, headers=headers, checks=CHECKS, timeout=30)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
