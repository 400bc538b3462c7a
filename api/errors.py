"""RFC 9457 problem details for every error the API returns, and the request-body size limit.

Every 4xx/5xx reply is ``application/problem+json`` with ``type, title, status, detail, instance``;
validation problems add ``errors: [{field, message}]`` where ``field`` is a dotted path into the
request body (``answers.q1``, ``questions[0].rubric.criteria``).

A dependency that cannot serve right now is never a 500: :func:`outage_of` recognises PostgreSQL
connection failures (psycopg ``OperationalError``, pool timeouts, a closed pool) and Redis connection
errors, and they answer 503 with a positive integer ``Retry-After``. Middlewares that reach a
dependency before routing use the same function, since FastAPI's handlers do not cover them.

Bad input is refused at the edge by the request models (:mod:`infra.db.values`), naming the field. An
unreadable body says what is wrong and where (``body: invalid JSON at line 1 column 72: Expecting
','``, ``body: send Content-Type: application/json``). As a last resort, a value PostgreSQL refuses
(a psycopg ``DataError``) or that cannot be encoded for it is a 422, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from json import JSONDecodeError
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolClosed, PoolTimeout
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.db.pools import DatabaseUnavailableError, PoolClosedError, PoolTimeoutError

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://gradeflow.dev/problems/"
MAX_BODY_BYTES = 1024 * 1024
"""Largest accepted request body (1 MiB); larger bodies get 413."""
POOL_RETRY_AFTER_SECONDS = 2
"""``Retry-After`` when the database is busy (no pooled connection free in time)."""
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
"""``Retry-After`` when a dependency is unreachable (a restart takes seconds)."""
CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
"""Admin/crash shutdown, cannot connect now, too many connections (besides class ``08``)."""


@dataclass(frozen=True, slots=True)
class Outage:
    """A dependency that cannot serve this request right now: the answer is 503 with ``Retry-After``."""

    slug: str
    """Last segment of the problem type URI."""
    detail: str
    """The problem's detail; it names the dependency."""
    retry_after: int
    """Seconds the client should wait (a positive integer)."""

    @property
    def headers(self) -> dict[str, str]:
        """The response headers of the 503."""
        return {"Retry-After": str(self.retry_after)}


DATABASE_BUSY = Outage("database-busy", "The database is busy; retry shortly.", POOL_RETRY_AFTER_SECONDS)
DATABASE_UNAVAILABLE = Outage("database-unavailable", "The database is unavailable; retry shortly.",
                              UNAVAILABLE_RETRY_AFTER_SECONDS)
REDIS_UNAVAILABLE = Outage("redis-unavailable", "Redis is unavailable; retry shortly.",
                           UNAVAILABLE_RETRY_AFTER_SECONDS)
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    PoolTimeoutError, PoolClosedError, PoolTimeout, PoolClosed, psycopg.OperationalError,
    redis_errors.ConnectionError, redis_errors.TimeoutError,
)
"""The exception classes :func:`outage_of` recognises (each gets the 503 handler)."""


def _classify(exc: BaseException) -> Outage | None:
    if isinstance(exc, DatabaseUnavailableError | PoolClosedError | PoolClosed):
        return DATABASE_UNAVAILABLE
    if isinstance(exc, PoolTimeoutError | PoolTimeout):
        return DATABASE_BUSY
    if isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: the client lost the connection (server closed it, timeout, refused).
        sqlstate = exc.sqlstate
        if sqlstate is None or sqlstate.startswith("08") or sqlstate in CONNECTION_LOST_SQLSTATES:
            return DATABASE_UNAVAILABLE
        return DATABASE_BUSY  # serialization failure, deadlock, lock or statement timeout: transient too
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return REDIS_UNAVAILABLE
    return None


def _errors_in(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its explicit causes (``raise ... from``) and the members of exception groups, each once."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)


def outage_of(exc: BaseException) -> Outage | None:
    """The dependency outage behind ``exc``, or ``None`` when it is not one.

    Looks at ``exc``, its explicit causes (``raise ... from``) and the members of exception groups.
    """
    for current in _errors_in(exc):
        if (outage := _classify(current)) is not None:
            return outage
    return None


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


def _encodable(text: str) -> str:
    r"""``text`` with lone surrogates (echoed from the input) spelled as escapes (``\udc00``): UTF-8 safe."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def problem_body(status: int, detail: str, *, instance: str, type_: str | None = None,
                 errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Build a problem document."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (type_ or phrase.lower().replace(" ", "-")),
        "title": phrase, "status": status, "detail": _encodable(detail), "instance": _encodable(instance),
    }
    if errors is not None:
        body["errors"] = [{k: _encodable(str(v)) for k, v in e.items()} for e in errors]
    return body


def problem_response(request: HTTPConnection, status: int, detail: str, *, type_: str | None = None,
                     errors: list[dict[str, str]] | None = None,
                     headers: Mapping[str, str] | None = None) -> JSONResponse:
    """Build a problem response for ``request`` (a WebSocket handshake too: it is sent as the denial)."""
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


def _sends_json(request: HTTPConnection) -> bool:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _body_error(request: HTTPConnection, exc: RequestValidationError, err: dict[str, Any]) -> dict[str, str] | None:
    """Say what is wrong with an unreadable body as a whole (``None``: the error is about a field)."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        reason = str((err.get("ctx") or {}).get("error", "malformed JSON"))
        doc = exc.body if isinstance(exc.body, str) else ""
        where = JSONDecodeError(reason, doc, pos) if doc else None
        at = f" at line {where.lineno} column {where.colno}" if where else ""
        return {"field": "body", "message": f"invalid JSON{at}: {reason}"}
    if loc == ("body",) and err.get("type") in ("model_attributes_type", "dict_type", "model_type"):
        if not _sends_json(request):
            return {"field": "body", "message": "send Content-Type: application/json (the body must be a JSON object)"}
        return {"field": "body", "message": "must be a JSON object"}
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    whole = [e for e in (_body_error(request, exc, err) for err in raw) if e is not None]
    errors = whole or validation_errors(raw)
    first = f"{errors[0]['field']}: {errors[0]['message']}" if errors else "see errors"
    more = f" (and {len(errors) - 1} more; see errors)" if len(errors) > 1 else ""
    return problem_response(request, 422, f"The request is invalid: {first[:300]}{more}.",
                            type_="validation-error", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body at all
        reason = ("nests too deeply" if isinstance(exc.__cause__, RecursionError)
                  else f"cannot be parsed ({_encodable(str(exc.__cause__))[:200]})")
        return problem_response(request, 400, f"The request body {reason}.", type_="invalid-body",
                                errors=[{"field": "body", "message": reason}], headers=exc.headers)
    return problem_response(request, exc.status_code, str(exc.detail), headers=exc.headers)


BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (psycopg.DataError, UnicodeEncodeError)
"""Input PostgreSQL refuses (bad text, number or date) or that cannot be encoded for it: a 422, never a 500."""


def bad_input_of(exc: BaseException) -> BaseException | None:
    """The rejected-input error behind ``exc`` (itself, a cause or a group member), or ``None``."""
    for current in _errors_in(exc):
        if isinstance(current, BAD_INPUT_ERRORS):
            return current
    return None


def bad_input_response(request: HTTPConnection, exc: BaseException) -> JSONResponse:
    """Last resort for input the edge validation let through: 422, logged so the gap gets closed."""
    logger.warning("input refused by the database on %s %s (add edge validation): %s: %s",
                   request.scope.get("method", "WEBSOCKET"), request.url.path, type(exc).__name__, exc)
    field = "body" if request.scope.get("method") in ("POST", "PUT", "PATCH") else "query"
    return problem_response(request, 422, "The request holds a value that cannot be stored (text with NUL "
                                          "characters or lone surrogates, or a number or date out of range).",
                            type_="validation-error",
                            errors=[{"field": field, "message": "a value cannot be stored"}])


async def _bad_input(request: Request, exc: Exception) -> JSONResponse:
    return bad_input_response(request, exc)


def outage_response(request: HTTPConnection, outage: Outage) -> JSONResponse:
    """The 503 problem response of ``outage``."""
    return problem_response(request, 503, outage.detail, type_=outage.slug, headers=outage.headers)


async def _outage(request: HTTPConnection, exc: Exception) -> JSONResponse:
    """Outage handler; also called for a WebSocket whose handshake failed on it (the 503 denies it)."""
    outage = outage_of(exc)
    assert outage is not None  # registered only for OUTAGE_ERRORS, which are all outages
    logger.warning("%s on %s %s: %s: %s", outage.slug, request.scope.get("method", "WEBSOCKET"),
                   request.url.path, type(exc).__name__, exc)
    return outage_response(request, outage)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if (outage := outage_of(exc)) is not None:  # wrapped in another error, or raised by a middleware
        logger.warning("%s on %s %s: %r", outage.slug, request.method, request.url.path, exc)
        return outage_response(request, outage)
    if (bad := bad_input_of(exc)) is not None:
        return bad_input_response(request, bad)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(request, 500, "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem-details handlers on ``app``."""
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in OUTAGE_ERRORS:
        app.add_exception_handler(error, _outage)
    for error in BAD_INPUT_ERRORS:
        app.add_exception_handler(error, _bad_input)
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
