"""The webhook dispatcher: POSTs due deliveries, retries them for hours, dead-letters the last failure.

It runs beside the outbox relay (``gradeflow relay``). Each round claims due deliveries of active
endpoints (:func:`infra.stores.webhooks.claim_due`: ``FOR UPDATE SKIP LOCKED`` plus a lease, so
several dispatchers share the work and a crashed one's claims come back when their lease runs out)
and sends them concurrently, each:

1. checks the URL again (:func:`infra.webhooks.urls.check_webhook_url`; in prod the request goes to
   the very addresses checked, with the host name kept for ``Host`` and TLS: no DNS rebinding);
2. POSTs the stored body with the Standard Webhooks headers (``webhook-id`` = the event id), with a
   timeout and no redirects followed;
3. records the outcome under the delivery's tenant: a 2xx is ``delivered``; anything else is retried
   after the next delay of the schedule (``GRADEFLOW_WEBHOOK_RETRY_SCHEDULE``, scaled by a random
   jitter factor) until the schedule is spent, then ``failed`` with a ``webhook`` dead letter that
   ``gradeflow dlq replay`` / ``POST /v1/admin/dlq/{id}/replay`` sends again. An endpoint failing for
   ``GRADEFLOW_WEBHOOK_DISABLE_AFTER_SECONDS`` is disabled: an error log line, the
   ``gradeflow_webhook_endpoints_disabled_total`` metric and a ``webhook.endpoint_disabled`` event.

Delivery is at least once (a crash between the request and the record sends it again, with the same
``webhook-id``); the order of deliveries is not guaranteed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from infra.db.pools import PoolManager
from infra.events.failures import describe
from infra.observability.metrics import WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_DURATION, WEBHOOK_ENDPOINTS_DISABLED
from infra.settings import Settings
from infra.stores import webhooks
from infra.stores.webhooks import Claim
from infra.webhooks.signing import signature_headers
from infra.webhooks.urls import Target, WebhookUrlError, check_webhook_url

logger = logging.getLogger(__name__)

USER_AGENT = "gradeflow-webhooks/1"
ERROR_BODY_BYTES = 300
"""How much of a failed answer's body is kept as the delivery's error."""


def retry_delay(attempt: int, schedule: Sequence[float], jitter: float) -> float | None:
    """Seconds before the attempt after ``attempt`` (1-based); ``None`` once the schedule is spent."""
    if attempt > len(schedule):
        return None
    return float(schedule[attempt - 1]) * random.uniform(1.0 - jitter, 1.0 + jitter)


def pinned_request(target: Target) -> tuple[str, dict[str, str], dict[str, str]]:
    """URL, extra headers and httpx extensions of a request to ``target``.

    With checked addresses (prod) the URL names the first address and the host travels in ``Host``
    and, for https, as the TLS server name (SNI and certificate check).
    """
    if not target.addresses:
        return target.url, {}, {}
    parts = urlsplit(target.url)
    address = target.addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    name = f"[{target.host}]" if ":" in target.host else target.host
    host = name if parts.port is None else f"{name}:{parts.port}"
    extensions = {"sni_hostname": target.host} if parts.scheme == "https" else {}
    return url, {"host": host}, extensions


class WebhookDispatcher:
    """Sends due webhook deliveries until stopped.

    Args:
        pools: the process's pool manager.
        env: the settings' ``env`` (``prod`` checks addresses before every request).
        schedule: seconds before each retry; ``len(schedule) + 1`` attempts in all.
        jitter: each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
        timeout: seconds one request may take.
        disable_after: seconds of nothing but failures after which an endpoint is disabled.
        poll_interval: seconds between looks for due deliveries when nothing wakes the dispatcher.
        batch_size: deliveries claimed and sent at once.
        lease_seconds: how long a claim keeps other dispatchers off a delivery (default: twice the
            timeout plus 5 s); a dispatcher killed mid-round leaves its claims to others after it.
        transport: an httpx transport (tests); default: httpx's.
        name: label for logs.

    """

    def __init__(self, pools: PoolManager, *, env: str, schedule: Sequence[float], jitter: float = 0.1,
                 timeout: float = 10.0, disable_after: float = 86400.0, poll_interval: float = 1.0,
                 batch_size: int = 20, lease_seconds: float | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, name: str = "webhooks") -> None:
        self.pools = pools
        self.env = env
        self.schedule = tuple(float(s) for s in schedule)
        self.jitter = jitter
        self.timeout = timeout
        self.disable_after = disable_after
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds if lease_seconds is not None else 2 * timeout + 5.0
        self.transport = transport
        self.name = name
        self._wake = asyncio.Event()

    @classmethod
    def from_settings(cls, pools: PoolManager, settings: Settings) -> WebhookDispatcher:
        """A dispatcher configured by the ``GRADEFLOW_WEBHOOK_*`` settings."""
        return cls(pools, env=settings.env, schedule=settings.webhook_retry_schedule,
                   jitter=settings.webhook_retry_jitter, timeout=settings.webhook_timeout,
                   disable_after=settings.webhook_disable_after_seconds,
                   poll_interval=settings.webhook_poll_interval, batch_size=settings.webhook_batch_size)

    def wake(self) -> None:
        """Look for due deliveries now (the fan-out recorded new ones)."""
        self._wake.set()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False,
                                 transport=self.transport)

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until ``stop`` is set."""
        async with self._client() as client:
            while not stop.is_set():
                self._wake.clear()
                try:
                    sent = await self.run_once(client)
                except Exception as exc:  # noqa: BLE001 - claims not recorded come back when their lease ends
                    logger.warning("%s: round failed (%s); retrying", self.name, describe(exc))
                    sent = 0
                if sent >= self.batch_size:
                    continue
                waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                try:
                    await asyncio.wait(waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for fut in waits:
                        fut.cancel()

    async def run_once(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim one batch of due deliveries and send them; return how many were claimed."""
        claims = await webhooks.claim_due(self.pools, limit=self.batch_size, lease_seconds=self.lease_seconds)
        if not claims:
            return 0
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(self._client())
            results = await asyncio.gather(*(self._deliver(client, c) for c in claims), return_exceptions=True)
        for claim, result in zip(claims, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("%s: delivery %s (event %s) not recorded (%s); sent again after its lease",
                               self.name, claim.id, claim.event_id, describe(result))
        return len(claims)

    def _secrets(self, claim: Claim) -> list[str]:
        out = [claim.secret]
        expires = claim.previous_secret_expires_at
        if claim.previous_secret and expires is not None and expires > datetime.now(UTC):
            out.append(claim.previous_secret)
        return out

    async def _deliver(self, client: httpx.AsyncClient, claim: Claim) -> None:
        started = time.monotonic()
        status_code: int | None = None
        refused = False
        try:
            target = await check_webhook_url(claim.url, env=self.env)
            url, headers, extensions = pinned_request(target)
            headers.update(signature_headers(claim.event_id, claim.body, self._secrets(claim)))
            headers.update({"content-type": "application/json", "user-agent": USER_AGENT})
            async with client.stream("POST", url, content=claim.body.encode(), headers=headers,
                                     extensions=extensions) as response:
                status_code = response.status_code
                snippet = b""
                if not 200 <= status_code < 300:
                    async for chunk in response.aiter_bytes():
                        snippet += chunk
                        if len(snippet) >= ERROR_BODY_BYTES:
                            break
            error = None if 200 <= status_code < 300 else (
                f"HTTP {status_code}: {snippet[:ERROR_BODY_BYTES].decode('utf-8', 'replace')}".strip())
        except WebhookUrlError as exc:
            refused, error = True, f"url refused: {exc}"
        except httpx.HTTPError as exc:
            error = describe(exc)
        finally:
            WEBHOOK_DELIVERY_DURATION.observe(time.monotonic() - started)
        if error is None:
            assert status_code is not None
            await webhooks.record_success(self.pools, claim, status_code=status_code)
            WEBHOOK_DELIVERIES.labels("delivered").inc()
            return
        attempt = claim.attempts + 1
        delay = retry_delay(attempt, self.schedule, self.jitter)
        outcome = await webhooks.record_failure(self.pools, claim, status_code=status_code, error=error[:1000],
                                                retry_in=delay, disable_after=self.disable_after)
        WEBHOOK_DELIVERIES.labels("dead_lettered" if delay is None else "refused" if refused else "retry").inc()
        if delay is not None:
            logger.info("%s: delivery %s of %s to endpoint %s failed (attempt %d/%d: %s); retry in %.1fs",
                        self.name, claim.id, claim.event_id, claim.endpoint_id, attempt, len(self.schedule) + 1,
                        error, delay)
        else:
            logger.error("%s: delivery %s of %s to endpoint %s gave up after %d attempts (%s); dead letter %s",
                         self.name, claim.id, claim.event_id, claim.endpoint_id, attempt, error,
                         outcome.dead_letter_id)
        if outcome.disabled:
            WEBHOOK_ENDPOINTS_DISABLED.inc()
            logger.error("%s: webhook endpoint %s (tenant %s, %s) disabled: every delivery failed for more than "
                         "%.0fs; POST /v1/webhooks/%s/enable turns it back on", self.name, claim.endpoint_id,
                         claim.tenant_id, claim.url, self.disable_after, claim.endpoint_id)
