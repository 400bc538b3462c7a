"""A real webhook receiver for the tests: an ASGI app on uvicorn, on 127.0.0.1, verifying every request.

It verifies each request's Standard Webhooks signature with ``standardwebhooks.Webhook`` against
each secret it was given and records what it got; it answers ``status`` (200 unless told otherwise)
after ``delay`` seconds. It listens on a socket the test bound beforehand, so while it is down its
port refuses connections and nothing else can take the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    """One request as the receiver saw it."""

    webhook_id: str
    timestamp: str
    signature: str
    body: str
    verified_by: list[int]
    """Indexes of the receiver's secrets that verified the signature (empty: none did)."""

    @property
    def event(self) -> dict[str, Any]:
        """The parsed body."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """The receiver's state: secrets to verify with, how to answer, and every request received."""

    secrets: Sequence[str]
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        text = body.decode()
        verified = []
        for index, secret in enumerate(self.secrets):
            with contextlib.suppress(WebhookVerificationError):
                Webhook(secret).verify(text, headers)
                verified.append(index)
        self.received.append(Received(headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""),
                                      headers.get("webhook-signature", ""), text, verified))
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok" if self.status < 300 else b"receiver says no"})


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free port of 127.0.0.1, not listening (connections are refused)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(receiver: Receiver, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``receiver`` on ``sock`` until the block ends."""
    config = uvicorn.Config(receiver, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task
