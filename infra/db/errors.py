"""Which failures are an outage (retry until it passes) and which are a logical error (stop).

PostgreSQL, Redis and Temporal being unreachable, restarting or refusing connections is normal; the
callers retry such failures for as long as an outage can last. Everything else (a constraint, a
refused transition, a bug) is a logical error that retrying cannot fix.
"""

from __future__ import annotations

import psycopg
from redis import exceptions as redis_errors

from infra.db.pools import PoolClosedError, PoolTimeoutError

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,  # includes AdminShutdown, a closed connection and psycopg_pool.PoolTimeout
    PoolTimeoutError, PoolClosedError,
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
    ConnectionError, TimeoutError, OSError,
)
"""Connection-level failures of a dependency: transient by nature."""


def is_outage(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error in its cause/context chain) is a connection-level failure."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, OUTAGE_ERRORS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
