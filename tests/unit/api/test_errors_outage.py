"""Which errors are dependency outages (503 + Retry-After) and which stay bugs (500)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolClosed, PoolTimeout
from redis import exceptions as redis_errors

from api.errors import DATABASE_BUSY, DATABASE_UNAVAILABLE, REDIS_UNAVAILABLE, outage_of
from infra.db.pools import DatabaseUnavailableError, PoolClosedError, PoolTimeoutError


@pytest.mark.parametrize("exc", [
    pg_errors.AdminShutdown("terminating connection due to administrator command"),
    pg_errors.CrashShutdown("crash"),
    pg_errors.CannotConnectNow("the database system is starting up"),
    pg_errors.ConnectionFailure("connection failure"),
    pg_errors.TooManyConnections("too many clients"),
    pg_errors.ConnectionTimeout("connection timeout expired"),
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.OperationalError("the connection is closed"),
    DatabaseUnavailableError("connecting to PostgreSQL failed"),
    PoolClosedError("the database pool is closed"),
    PoolClosed("the pool is closed"),
])
def test_lost_or_refused_database_connections_are_unavailable(exc: BaseException) -> None:
    assert outage_of(exc) == DATABASE_UNAVAILABLE


@pytest.mark.parametrize("exc", [
    PoolTimeoutError("no database connection free within 5s"),
    PoolTimeout("couldn't get a connection after 5.00 sec"),
    pg_errors.SerializationFailure("could not serialize access"),
    pg_errors.DeadlockDetected("deadlock detected"),
    pg_errors.QueryCanceled("canceling statement due to statement timeout"),
])
def test_a_busy_database_is_busy(exc: BaseException) -> None:
    assert outage_of(exc) == DATABASE_BUSY


@pytest.mark.parametrize("exc", [redis_errors.ConnectionError("refused"), redis_errors.TimeoutError("timeout"),
                                 redis_errors.BusyLoadingError("loading")])
def test_redis_connection_errors_name_redis(exc: BaseException) -> None:
    assert outage_of(exc) == REDIS_UNAVAILABLE


@pytest.mark.parametrize("exc", [
    ValueError("bad input"), RuntimeError("bug"), KeyError("missing"),
    pg_errors.UniqueViolation("duplicate key"), psycopg.ProgrammingError("syntax"),
    redis_errors.ResponseError("WRONGTYPE"),
])
def test_other_errors_are_not_outages(exc: BaseException) -> None:
    assert outage_of(exc) is None


def test_an_outage_behind_an_explicit_cause_or_in_a_group_is_found() -> None:
    try:
        try:
            raise pg_errors.AdminShutdown("terminating connection")
        except psycopg.OperationalError as inner:
            raise RuntimeError("could not store the exam") from inner
    except RuntimeError as wrapped:
        assert outage_of(wrapped) == DATABASE_UNAVAILABLE
    group = ExceptionGroup("gather", [ValueError("x"), PoolTimeoutError("busy")])
    assert outage_of(group) == DATABASE_BUSY


def test_every_outage_has_a_positive_integer_retry_after_and_names_its_dependency() -> None:
    for outage, name in ((DATABASE_BUSY, "database"), (DATABASE_UNAVAILABLE, "database"),
                         (REDIS_UNAVAILABLE, "redis")):
        assert int(outage.headers["Retry-After"]) >= 1
        assert name in outage.detail.lower()
