"""Start-up checks that turn bad configuration into one clear line naming the setting."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from infra.settings import Settings


class ConfigError(RuntimeError):
    """A setting is missing or points at something that does not answer."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or ''}".rstrip(":")


def require(settings: Settings, *names: str) -> None:
    """Raise :class:`ConfigError` for the first of ``names`` that is unset."""
    for name in names:
        if getattr(settings, name) is None:
            raise ConfigError(f"GRADEFLOW_{name.upper()}", "is not set (or run `gradeflow dev` for a local stack)")


def _pg_reason(exc: Exception) -> str:
    """The useful part of libpq's multi-line connection error."""
    text = " ".join(str(exc).split())
    for known in ("password authentication failed", "Connection refused", "does not exist",
                  "timeout expired", "no pg_hba.conf entry", "could not translate host name"):
        if known in text:
            start = text.find(known)
            return text[start:].split(" Is the server")[0].strip()
    return text or type(exc).__name__


async def check_database(url: str, setting: str = "GRADEFLOW_DATABASE_URL") -> None:
    """Connect once to PostgreSQL; raise :class:`ConfigError` naming ``setting`` on failure."""
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise ConfigError(setting, f"cannot connect to PostgreSQL at {_where(url)}: {_pg_reason(exc)}") from None
    except psycopg.ProgrammingError as exc:
        raise ConfigError(setting, f"malformed PostgreSQL URL: {exc}") from None
    await conn.close()


async def check_redis(url: str, setting: str = "GRADEFLOW_REDIS_URL") -> None:
    """Ping Redis once; raise :class:`ConfigError` naming ``setting`` on failure."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(setting, f"cannot reach Redis at {_where(url)}: {exc}") from None
    finally:
        await client.aclose()


async def connect_temporal(address: str, namespace: str, *, attempts: int = 20, delay: float = 0.5):
    """Connect to Temporal, retrying while the frontend warms up; ConfigError when it never answers."""
    from temporalio.client import Client

    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await Client.connect(address, namespace=namespace)
        except Exception as exc:  # noqa: BLE001 - RuntimeError from the core SDK on connect failures
            last = exc
            await asyncio.sleep(delay)
    raise ConfigError("GRADEFLOW_TEMPORAL_ADDRESS", f"cannot reach Temporal at {address}: {last}")


async def check_all(settings: Settings, *, database: bool = True, redis: bool = True,
                    temporal: bool = True) -> None:
    """Check the dependencies a command needs, in order, failing on the first."""
    if database:
        require(settings, "database_url")
        await check_database(str(settings.database_url))
    if redis:
        require(settings, "redis_url")
        await check_redis(str(settings.redis_url))
    if temporal:
        require(settings, "temporal_address")
        client = await connect_temporal(str(settings.temporal_address), settings.temporal_namespace, attempts=3)
        del client
