"""Webhook signing (verified with ``standardwebhooks`` itself), the pinned request of a checked URL, and the
retry schedule: pure functions, checked over generated inputs."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from infra.webhooks.dispatcher import pinned_request, retry_delay
from infra.webhooks.signing import new_secret, signature_headers
from infra.webhooks.urls import Target, WebhookUrlError, parse_webhook_url

bodies = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
ids = st.uuids().map(str)


@given(message_id=ids, body=bodies)
def test_a_signed_request_verifies_with_its_secret_only(message_id: str, body: str) -> None:
    secret, other = new_secret(), new_secret()
    headers = signature_headers(message_id, body, [secret])
    assert headers["webhook-id"] == message_id
    Webhook(secret).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + " ", headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": message_id + "x"}, json_parse=False)


@given(message_id=ids, body=bodies)
def test_during_a_grace_period_either_secret_verifies(message_id: str, body: str) -> None:
    new, old = new_secret(), new_secret()
    headers = signature_headers(message_id, body, [new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers, json_parse=False)
    Webhook(old).verify(body, headers, json_parse=False)


def test_the_timestamp_is_the_attempts_unix_second() -> None:
    at = datetime(2026, 11, 29, 22, 0, 5, 900_000, tzinfo=UTC)
    assert signature_headers("id", "{}", [new_secret()], at=at)["webhook-timestamp"] == str(int(at.timestamp()))


def test_secrets_are_fresh_standard_webhooks_secrets() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50 and all(s.startswith("whsec_") for s in secrets)


@given(ip=st.ip_addresses(), port=st.one_of(st.none(), st.integers(1, 65535)),
       scheme=st.sampled_from(["https", "http"]), path=st.sampled_from(["", "/", "/hooks", "/a/b?x=1"]))
def test_a_pinned_request_goes_to_the_checked_address_and_keeps_the_host(ip, port, scheme, path) -> None:
    host = "hooks.example.org"
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"
    target = Target(url=url, host=host, port=port or 443, addresses=(str(ip),))
    pinned, headers, extensions = pinned_request(target)
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    assert pinned.startswith(f"{scheme}://{literal}{'' if port is None else f':{port}'}/")
    assert headers == {"host": host if port is None else f"{host}:{port}"}
    assert extensions == ({"sni_hostname": host} if scheme == "https" else {})
    parts = urlsplit(pinned)
    assert ipaddress.ip_address(str(parts.hostname)) == ip and parts.port == port


def test_without_checked_addresses_the_url_is_used_as_is() -> None:
    target = Target(url="http://127.0.0.1:8080/h", host="127.0.0.1", port=8080, addresses=())
    assert pinned_request(target) == ("http://127.0.0.1:8080/h", {}, {})


@given(schedule=st.lists(st.floats(0.0, 1e6), min_size=1, max_size=10), jitter=st.floats(0.0, 0.99),
       attempt=st.integers(1, 12))
def test_retry_delays_follow_the_schedule_within_the_jitter(schedule, jitter, attempt) -> None:
    delay = retry_delay(attempt, schedule, jitter)
    if attempt > len(schedule):
        assert delay is None
        return
    base = schedule[attempt - 1]
    assert delay is not None and base * (1 - jitter) - 1e-6 <= delay <= base * (1 + jitter) + 1e-6


@pytest.mark.parametrize(("url", "env", "why"), [
    ("http://hooks.example.org/x", "prod", "https"),
    ("ftp://hooks.example.org/x", "dev", "http"),
    ("https://user:pw@hooks.example.org/x", "prod", "credentials"),
    ("https://hooks.example.org/x#frag", "prod", "fragment"),
    ("https:///x", "prod", "host"),
    ("https://hooks.example.org:99999/x", "prod", "valid URL"),
    ("https://hooks.example.org/a b", "prod", "spaces"),
    ("https://hooks.example.org/" + "a" * 2048, "prod", "2048"),
])
def test_malformed_urls_are_refused_with_the_reason(url: str, env: str, why: str) -> None:
    with pytest.raises(WebhookUrlError, match=why):
        parse_webhook_url(url, env=env)
