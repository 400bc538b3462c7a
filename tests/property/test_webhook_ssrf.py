# ruff: noqa: F811 - pytest fixtures imported from tests.integration.api_contract.fixtures
"""In prod no webhook may point into the platform's own network: every loopback, private, link-local or
otherwise non-public address, in any spelling the resolver takes (dotted, integer, hex, IPv6, IPv4 mapped
into IPv6, a host name resolving to one), is refused with a 422 naming ``url``, at registration (the real
API) and again at delivery time; public https addresses are accepted."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from infra.webhooks.fanout import webhook_fanout
from infra.webhooks.urls import WebhookUrlError, check_webhook_url, is_forbidden_address
from tests.integration.api.server import serve_app
from tests.integration.infra.events.outbox_support import until
from tests.integration.infra.webhooks.support import deliveries, dispatcher, emit, endpoint

FORBIDDEN_V4 = [ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
    "0.0.0.0/8", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4")]
FORBIDDEN_V6 = [ipaddress.ip_network(n) for n in ("::1/128", "fe80::/10", "fc00::/7", "ff00::/8", "::/128",
                                                   "2001:db8::/32")]


def _in(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy:
    return st.integers(0, network.num_addresses - 1).map(lambda i: network[i])


forbidden_v4 = st.sampled_from(FORBIDDEN_V4).flatmap(_in)
forbidden_v6 = st.sampled_from(FORBIDDEN_V6).flatmap(_in)


@st.composite
def forbidden_hosts(draw: st.DrawFn) -> str:
    """A URL host naming a forbidden address, spelled one of the ways resolvers accept."""
    kind = draw(st.sampled_from(["dotted", "integer", "hex", "v6", "mapped", "name"]))
    if kind == "v6":
        return f"[{draw(forbidden_v6)}]"
    if kind == "name":
        return draw(st.sampled_from(["localhost", "LOCALHOST"]))
    ip = draw(forbidden_v4)
    if kind == "integer":
        return str(int(ip))
    if kind == "hex":
        return hex(int(ip))
    if kind == "mapped":
        return f"[::ffff:{ip}]"
    return str(ip)


public_v4 = st.integers(0x01000000, 0xDFFFFFFF).map(ipaddress.IPv4Address).filter(
    lambda ip: not is_forbidden_address(ip))


@pytest.fixture
async def prod_api(contract_settings, temporal_client, task_queue) -> AsyncIterator[httpx.AsyncClient]:
    """The real API with ``env=prod`` (only the webhook URL rules read it here)."""
    async with serve_app(contract_settings.model_copy(update={"env": "prod"}), temporal_client, task_queue) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


@given(host=forbidden_hosts(), port=st.one_of(st.none(), st.integers(1, 65535)))
async def test_non_public_addresses_are_refused_at_registration(prod_api, bearer, host, port) -> None:
    url = f"https://{host}{'' if port is None else f':{port}'}/hooks"
    with pytest.raises(WebhookUrlError, match="non-public address"):
        await check_webhook_url(url, env="prod")
    response = await prod_api.post("/v1/webhooks", json={"url": url, "event_types": ["*"]},
                                   headers=bearer(f"t-{uuid.uuid4().hex[:12]}", roles=("admin",)))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["url"]


@given(ip=public_v4, scheme=st.sampled_from(["https", "http"]))
async def test_public_addresses_are_accepted_over_https_only(ip, scheme) -> None:
    url = f"{scheme}://{ip}/hooks"
    if scheme == "http":
        with pytest.raises(WebhookUrlError, match="https"):
            await check_webhook_url(url, env="prod")
        assert (await check_webhook_url(url, env="dev")).url == url
        return
    target = await check_webhook_url(url, env="prod")
    assert target.addresses == (str(ip),)


async def test_an_endpoint_that_now_resolves_to_loopback_is_refused_at_delivery_time(pools) -> None:
    """Registered while allowed (here: stored directly), delivered in prod: no request reaches the address."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    await endpoint(pools, tenant, "https://localhost:1/hooks")
    [event] = await emit(pools, tenant, 1)
    await webhook_fanout(pools)(event)
    hooks = dispatcher(pools, env="prod")
    before = REGISTRY.get_sample_value("gradeflow_webhook_deliveries_total", {"outcome": "refused"}) or 0.0

    async def attempted() -> dict | None:
        await hooks.run_once()
        rows = await deliveries(pools, tenant)
        return rows[0] if rows and rows[0]["attempts"] >= 1 else None

    delivery = await until(attempted, what="a delivery attempt")
    assert delivery["status"] == "pending" and delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("url refused: host 'localhost' resolves to a non-public address")
    assert REGISTRY.get_sample_value("gradeflow_webhook_deliveries_total", {"outcome": "refused"}) >= before + 1
