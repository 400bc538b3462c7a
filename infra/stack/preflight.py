"""Start-up checks that turn bad configuration into one clear line naming the setting."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import warnings
from urllib.parse import urlsplit

from infra.settings import Settings


class ConfigError(RuntimeError):
    """A setting is missing or points at something that does not answer."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


MODEL_EXTRAS = {"openai": "openai", "azure_openai": "openai", "anthropic": "anthropic"}
"""Model provider -> the gradeflow extra that installs its LangChain package."""
MODEL_KEYS = {
    "openai": "OPENAI_API_KEY", "azure_openai": "AZURE_OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
    "google_genai": "GOOGLE_API_KEY", "mistralai": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY",
    "cohere": "COHERE_API_KEY", "fireworks": "FIREWORKS_API_KEY", "together": "TOGETHER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY", "xai": "XAI_API_KEY", "perplexity": "PPLX_API_KEY",
}
"""Model provider -> the environment variable its LangChain package reads the API key from."""


def check_model(settings: Settings) -> None:
    """Check ``GRADEFLOW_LLM_MODEL`` before anything starts: known provider, package installed, API key set.

    Raises:
        ConfigError: naming ``GRADEFLOW_LLM_MODEL`` and what to install or set.

    """
    model = settings.llm_model
    if not model:
        return
    setting = "GRADEFLOW_LLM_MODEL"
    try:
        from langchain.chat_models.base import _BUILTIN_PROVIDERS, _parse_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, provider = _parse_model(model, None)
        package = _BUILTIN_PROVIDERS[provider][0].split(".")[0]
    except (ImportError, KeyError, ValueError):
        raise ConfigError(setting, f"cannot tell the provider of {model!r}; write it as provider:model, "
                                   "e.g. openai:gpt-4o-mini (or unset it to grade with the rubric engine)") from None
    if importlib.util.find_spec(package) is None:
        extra = MODEL_EXTRAS.get(provider)
        install = f"pip install 'gradeflow[{extra}]'" if extra else f"pip install {package.replace('_', '-')}"
        raise ConfigError(setting, f"{model!r} needs the {package} package: {install}")
    key = MODEL_KEYS.get(provider)
    if key and not os.environ.get(key):
        raise ConfigError(setting, f"{model!r} needs {key} set in the environment "
                                   "(or unset GRADEFLOW_LLM_MODEL to grade with the rubric engine)")


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
