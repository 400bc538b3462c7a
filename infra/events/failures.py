"""Which relay failures are transient (a dependency is unreachable) and which are logical.

The outbox relay retries a transient failure for as long as it lasts, with capped backoff and
without spending the event's attempt budget; only a logical failure (a handler that raises for this
event) counts toward ``outbox_max_attempts`` and ends as a dead letter.
"""

from __future__ import annotations

import psycopg
from redis import exceptions as redis_errors
from temporalio.service import RPCError, RPCStatusCode

from infra.db.pools import PoolTimeoutError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # BusyLoadingError is one: Redis still loading its data set
    redis_errors.TimeoutError,
    redis_errors.TryAgainError, redis_errors.ReadOnlyError, redis_errors.MasterDownError,  # failover
    redis_errors.ClusterDownError,
    psycopg.OperationalError,  # connection lost, server shutting down, deadlock, serialization failure
    PoolTimeoutError,  # every pooled PostgreSQL connection busy
    ConnectionError, TimeoutError, OSError,
)
"""Exception types that say a dependency is unreachable or busy, not that the event is wrong."""

TRANSIENT_RPC_STATUSES = frozenset({
    RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED,
})
"""Temporal RPC statuses of an unreachable or overloaded frontend."""

CONNECTION_WORDS = ("connection refused", "connection reset", "transport error", "broken pipe")
"""Fragments of a Temporal ``RPCError`` message that describe a failed connection, whatever its status."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was explicitly raised from, is a connection-level failure.

    Only the explicit ``raise ... from`` chain (``__cause__``) is followed, not the implicit context:
    a logical error raised while handling a connection error is still a logical error.
    """
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, TRANSIENT_ERRORS):
            return True
        if isinstance(seen, RPCError) and (
                seen.status in TRANSIENT_RPC_STATUSES
                or any(word in str(seen).lower() for word in CONNECTION_WORDS)):
            return True
        seen = seen.__cause__
    return False


def describe(exc: BaseException, *, limit: int = 1000) -> str:
    """``Type: message`` of an error, cut to ``limit`` characters (stored as the event's last error)."""
    return f"{type(exc).__name__}: {exc}"[:limit]
