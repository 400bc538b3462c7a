"""Which relay failures are an outage (retried forever, never counted) and which are the event's own."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import PoolTimeout
from redis import exceptions as redis_errors
from temporalio.service import RPCError, RPCStatusCode

from infra.db.pools import PoolTimeoutError
from infra.events.failures import describe, is_transient


def _caused(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize("exc", [
    redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6380. Connection refused."),
    redis_errors.TimeoutError("Timeout reading from socket"),
    redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
    redis_errors.ReadOnlyError("You can't write against a read only replica."),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    PoolTimeout("couldn't get a connection after 5.00 sec"),
    PoolTimeoutError("no database connection free within 5s"),
    RPCError("Server connection error", RPCStatusCode.UNAVAILABLE, b""),
    RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b""),
    RPCError("namespace rate limit exceeded", RPCStatusCode.RESOURCE_EXHAUSTED, b""),
    RPCError("transport error: connection refused", RPCStatusCode.UNKNOWN, b""),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    OSError(113, "No route to host"),
    _caused(RuntimeError("could not start the grading"), ConnectionResetError()),
], ids=lambda exc: type(exc).__name__)
def test_connection_level_failures_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    RuntimeError("no rubric for question 3"),
    KeyError("exam_id"),
    ValueError("bad payload"),
    redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"),
    RPCError("workflow type not registered", RPCStatusCode.INVALID_ARGUMENT, b""),
    RPCError("namespace default is not found", RPCStatusCode.NOT_FOUND, b""),
], ids=lambda exc: type(exc).__name__)
def test_logical_failures_are_not_transient(exc: Exception) -> None:
    assert not is_transient(exc)


def test_only_an_explicit_cause_makes_an_error_transient() -> None:
    try:
        try:
            raise ConnectionError("redis down")
        except ConnectionError:
            raise ValueError("bug in the fallback") from None
    except ValueError as exc:
        assert exc.__context__ is not None
        assert not is_transient(exc)


def test_describe_names_the_type_and_is_bounded() -> None:
    assert describe(KeyError("x")) == "KeyError: 'x'"
    assert len(describe(RuntimeError("y" * 5000))) == 1000
