"""RFC 9457 problem details for every error the API returns, and the request-body size limit.

Every 4xx/5xx reply is ``application/problem+json`` with ``type, title, status, detail, instance``;
validation problems add ``errors: [{field, message}]`` where ``field`` is a dotted path into the
request body (``answers.q1``, ``questions[0].rubric.criteria``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.db.pools import PoolTimeoutError

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://gradeflow.dev/problems/"
MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body (1 MiB); larger bodies get 413."""
POOL_RETRY_AFTER_SECONDS = 2


class ProblemError(Exception):
    """Raise from a route to reply with a problem document.

    Args:
        status: HTTP status.
        detail: human-readable explanation of this occurrence.
        type_: last segment of the problem type URI (defaults from the status).
        errors: field errors, ``[{field, message}]``.
        headers: extra response headers.

    """

    def __init__(self, status: int, detail: str, *, type_: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type_ = type_
        self.errors = errors
        self.headers = headers


def problem_body(status: int, detail: str, *, instance: str, type_: str | None = None,
                 errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Build a problem document."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (type_ or phrase.lower().replace(" ", "-")),
        "title": phrase, "status": status, "detail": detail, "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(request: Request, status: int, detail: str, *, type_: str | None = None,
                     errors: list[dict[str, str]] | None = None,
                     headers: Mapping[str, str] | None = None) -> JSONResponse:
    """Build a problem response for ``request``."""
    return JSONResponse(problem_body(status, detail, instance=request.url.path, type_=type_, errors=errors),
                        status_code=status, media_type=PROBLEM_JSON, headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """Render a pydantic error location as a dotted field path (``questions[0].rubric``)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith(("function-", "tagged-union")) or part in
                                        ("function-after", "function-before")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Convert pydantic errors to ``[{field, message}]``, lifting ``rubric.x: ...`` prefixes into the field."""
    out = []
    for err in errors:
        field = field_path(err.get("loc", ()))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        head, sep, rest = message.partition(": ")
        if sep and head.startswith("rubric.") and " " not in head:
            field, message = (f"{field}.{head}" if field else head), rest
        out.append({"field": field or "body", "message": message})
    return out


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(request, exc.status, exc.detail, type_=exc.type_, errors=exc.errors,
                            headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(list(exc.errors()))
    return problem_response(request, 422, "The request is invalid; see errors.", type_="validation-error",
                            errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(request, exc.status_code, str(exc.detail), headers=exc.headers)


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database pool exhausted: %s", exc)
    return problem_response(request, 503, "The database is busy; retry shortly.", type_="database-busy",
                            headers={"Retry-After": str(POOL_RETRY_AFTER_SECONDS)})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem-details handlers on ``app``."""
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PoolTimeoutError, _pool_timeout)
    app.add_exception_handler(Exception, _unexpected)


class BodySizeLimitMiddleware:
    """Pure ASGI middleware replying 413 (problem) to bodies over ``max_bytes``.

    Checks ``Content-Length`` up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413 when its body is too large."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._reject(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        body = problem_body(413, f"The request body exceeds {self.max_bytes} bytes.",
                            instance=scope.get("path", ""))
        response = JSONResponse(body, status_code=413, media_type=PROBLEM_JSON, headers={"Connection": "close"})
        await response(scope, _noop_receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while reading an oversized streamed body; FastAPI re-raises HTTP exceptions as they are."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body exceeds {max_bytes} bytes.")


async def _noop_receive() -> Message:
    return {"type": "http.disconnect"}
