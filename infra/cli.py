"""The ``gradeflow`` command: dev stack, migrations, and each production process.

Every failure a user can cause (bad setting, unreachable service, taken port) ends with one line
naming the setting and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from infra.stack.preflight import ConfigError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _settings_epilog() -> str:
    from infra.settings import Settings

    lines = ["settings (environment variables; also read from the process environment only):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default is not None else "unset"
        doc = (field.description or "").replace("``", "")
        lines.append(f"  GRADEFLOW_{name.upper():<28} {doc} [default: {default}]")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with every command and every setting documented in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="gradeflow",
        description="Durable AI grading platform: Temporal workflows, LangGraph agents, PostgreSQL, Redis.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("dev", help="start embedded PostgreSQL, Redis, Temporal (+ Web UI) and every gradeflow "
                              "process; Ctrl-C stops it all")
    sub.add_parser("migrate", help="apply pending SQL migrations (safe to run concurrently)")
    sub.add_parser("api", help="run the HTTP/WebSocket API (uvicorn)")
    worker = sub.add_parser("worker", help="run Temporal workers")
    worker.add_argument("--queue", choices=["orchestration", "cognitive", "all"], default="all",
                        help="which task queue(s) to serve (default: all)")
    sub.add_parser("relay", help="run the outbox relay (publishes events, starts stranded workflows)")
    token = sub.add_parser("token", help="mint a JWT bearer token for development")
    token.add_argument("--tenant", required=True, help="tenant id claim")
    token.add_argument("--role", action="append", choices=["submitter", "reviewer", "admin"],
                       help="role claim (repeatable; default submitter)")
    token.add_argument("--sub", default="dev-user", help="subject claim (default dev-user)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    return parser


def _configure_logging(level: str) -> None:
    from infra.observability.tracing import LOG_FORMAT, install_log_trace_ids

    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    install_log_trace_ids()


def _cmd_migrate(settings) -> int:  # type: ignore[no-untyped-def]
    from infra.db.migrate import migrate
    from infra.stack.preflight import check_database

    url = settings.admin_url
    if url is None:
        raise ConfigError("GRADEFLOW_DATABASE_URL", "is not set (GRADEFLOW_DATABASE_ADMIN_URL for migrations)")
    setting = "GRADEFLOW_DATABASE_ADMIN_URL" if settings.database_admin_url else "GRADEFLOW_DATABASE_URL"
    asyncio.run(check_database(url, setting))
    asyncio.run(migrate(url, app_password=settings.app_db_password))
    return 0


def _cmd_api(settings) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.preflight import check_all

    asyncio.run(check_all(settings))
    from api.app import serve

    serve(settings)
    return 0


def _cmd_worker(settings, queue: str) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.preflight import check_all

    asyncio.run(check_all(settings))
    from worker import run_worker

    asyncio.run(run_worker(settings, queue))  # type: ignore[arg-type]
    return 0


def _cmd_relay(settings) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.preflight import check_all

    asyncio.run(check_all(settings))
    asyncio.run(_relay_with_reconciler(settings))
    return 0


async def _relay_with_reconciler(settings) -> None:  # type: ignore[no-untyped-def]
    """Run the relay with the reconciler: a ``submission.received`` event starts its grading.

    Beside it runs the external-event bridge (Redis stream → ``external_event`` signals); both share
    the relay's stop signal (SIGTERM/SIGINT).
    """
    import os
    import socket

    from redis.asyncio import Redis

    from infra.cache.copies import Cache
    from infra.constants import SUBMISSION_EVENTS, EventType
    from infra.events.external import ExternalEventBridge
    from infra.events.relay import run_relay
    from infra.stack.preflight import connect_temporal
    from infra.stores.submissions import copy_repair_handler
    from infra.temporal.starter import make_reconciler_handler

    client = await connect_temporal(str(settings.temporal_address), settings.temporal_namespace)
    stop = asyncio.Event()
    redis = Redis.from_url(str(settings.redis_url), decode_responses=True)
    repair = copy_repair_handler(Cache(redis, ttl_seconds=settings.cache_ttl_seconds))
    reconcile = make_reconciler_handler(client, settings=settings)
    handlers = {event_type.value: repair for event_type in SUBMISSION_EVENTS}

    async def repair_and_reconcile(event: Any) -> None:
        await repair(event)
        await reconcile(event)

    handlers[EventType.SUBMISSION_RECEIVED.value] = repair_and_reconcile
    bridge = ExternalEventBridge(redis, client, consumer_name=f"relay-{socket.gethostname()}-{os.getpid()}")
    bridge_task = asyncio.create_task(bridge.run(stop), name="external-event-bridge")
    try:
        await run_relay(settings, handlers=handlers, stop=stop)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(bridge_task, settings.shutdown_timeout)  # cancelled if it overruns
        except TimeoutError:
            pass
        await redis.aclose()


def _cmd_token(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.security.tokens import mint_token

    print(mint_token(settings, tenant=args.tenant, roles=args.role or ["submitter"], sub=args.sub,
                     ttl_seconds=args.ttl))
    return 0


def _cmd_dev(settings) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.devserver import run_dev

    return run_dev(settings)


def _run(args: argparse.Namespace) -> int:
    from infra.settings import get_settings

    settings = get_settings()
    _configure_logging(settings.log_level)
    commands: dict[str, Callable[[], int]] = {
        "dev": lambda: _cmd_dev(settings),
        "migrate": lambda: _cmd_migrate(settings),
        "api": lambda: _cmd_api(settings),
        "worker": lambda: _cmd_worker(settings, args.queue),
        "relay": lambda: _cmd_relay(settings),
        "token": lambda: _cmd_token(settings, args),
    }
    return commands[args.command]()


def _format_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = "_".join(str(part) for part in error["loc"]) if error["loc"] else ""
        name = f"GRADEFLOW_{loc.upper()}" if loc else "settings"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if loc else message)
    return "; ".join(problems)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gradeflow`` console script."""
    args = build_parser().parse_args(argv)
    from infra.stack.embedded import EmbeddedStackError

    try:
        return _run(args)
    except ValidationError as exc:
        print(f"gradeflow: invalid setting: {_format_validation_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"gradeflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except EmbeddedStackError as exc:
        print("gradeflow: " + textwrap.shorten(str(exc), 2000), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
