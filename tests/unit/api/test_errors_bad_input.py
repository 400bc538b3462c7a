"""Last resort for bad input: a value PostgreSQL refuses is a 422 problem, never a 500; problems always encode."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from psycopg import errors as pg_errors

from api.errors import ProblemError, bad_input_of, install_error_handlers


def _app(exc: BaseException) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    @app.post("/boom")
    async def boom_post() -> None:
        raise exc

    @app.get("/echo")
    async def echo() -> None:
        raise ProblemError(404, "No exam 'x\udc00' for this tenant.", errors=[{"field": "q\udc00", "message": "m"}])

    return app


async def _call(app: FastAPI, method: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://test") as client:
        return await client.request(method, path)


@pytest.mark.parametrize(("exc", "method", "field"), [
    (pg_errors.UntranslatableCharacter("unsupported Unicode escape sequence"), "POST", "body"),
    (pg_errors.CharacterNotInRepertoire("invalid byte sequence"), "POST", "body"),
    (pg_errors.InvalidTextRepresentation('invalid input syntax for type uuid: "urn:uuid:x"'), "GET", "query"),
    (pg_errors.NumericValueOutOfRange("value overflows numeric format"), "GET", "query"),
    (pg_errors.DatetimeFieldOverflow("time zone displacement out of range"), "GET", "query"),
    (UnicodeEncodeError("utf-8", "\udc00", 0, 1, "surrogates not allowed"), "POST", "body"),
])
async def test_values_the_database_refuses_are_422(exc: BaseException, method: str, field: str) -> None:
    resp = await _call(_app(exc), method, "/boom")
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["errors"] == [{"field": field, "message": "a value cannot be stored"}]
    assert "unsupported" not in resp.text and "invalid input" not in resp.text  # no database text leaks


def test_bad_input_is_found_behind_a_cause_or_in_a_group() -> None:
    inner = pg_errors.UntranslatableCharacter("x")
    try:
        try:
            raise inner
        except pg_errors.DataError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert bad_input_of(outer) is inner
    assert bad_input_of(ExceptionGroup("g", [ValueError("v"), inner])) is inner
    assert bad_input_of(pg_errors.UniqueViolation("dup")) is None
    assert bad_input_of(ValueError("v")) is None


async def test_a_bug_is_still_a_500() -> None:
    resp = await _call(_app(RuntimeError("bug")), "GET", "/boom")
    assert resp.status_code == 500


async def test_problems_echoing_lone_surrogates_still_encode() -> None:
    resp = await _call(_app(RuntimeError("unused")), "GET", "/echo")
    assert resp.status_code == 404
    body = resp.json()
    assert body["detail"] == "No exam 'x\\udc00' for this tenant."
    assert body["errors"] == [{"field": "q\\udc00", "message": "m"}]
