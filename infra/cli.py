"""The ``gradeflow`` command: dev stack, migrations, and each production process.

Every failure a user can cause (bad setting, unreachable service, taken port) ends with one line
naming the setting and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable

from pydantic import ValidationError
from pydantic_settings import SettingsError

from infra.client import CLIENT_COMMANDS, add_client_parsers, run_client
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
    dev = sub.add_parser("dev", help="start embedded PostgreSQL, Redis, Temporal (+ Web UI) and every gradeflow "
                                    "process; Ctrl-C stops it all")
    dev.add_argument("--cognitive-workers", type=_positive_int, default=1, metavar="N",
                     help="cognitive worker processes polling the cognitive queue (default 1; each is one core)")
    sub.add_parser("migrate", help="apply pending SQL migrations (safe to run concurrently)")
    sub.add_parser("api", help="run the HTTP/WebSocket API (uvicorn)")
    worker = sub.add_parser("worker", help="run Temporal workers")
    worker.add_argument("--queue", choices=["orchestration", "cognitive", "all"], default="all",
                        help="which task queue(s) to serve (default: all)")
    sub.add_parser("relay", help="run the outbox relay (publishes events, starts stranded workflows)")
    retry = sub.add_parser("retry", help="retry a needs_intervention submission: a new grading run resumes from "
                                         "its last checkpoint (audited)")
    retry.add_argument("submission_id", help="the submission to retry")
    retry.add_argument("--tenant", required=True, help="tenant owning the submission")
    retry.add_argument("--reason", required=True, help="why it is retried (kept in the audit log)")
    retry.add_argument("--actor", default="operator-cli", help="who retries it (default operator-cli)")
    token = sub.add_parser("token", help="mint a JWT bearer token for development")
    token.add_argument("--tenant", required=True, help="tenant id claim")
    token.add_argument("--role", action="append", choices=["submitter", "reviewer", "admin"],
                       help="role claim (repeatable; default submitter)")
    token.add_argument("--sub", default="dev-user", help="subject claim (default dev-user)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    _add_dlq_parser(sub)
    backup = sub.add_parser("backup", help="dump the database (pg_dump custom format, compressed) with a checksum and "
                                           "a manifest into GRADEFLOW_BACKUP_DIR, and verify it in a scratch database")
    backup.add_argument("--dir", help="backup folder (default GRADEFLOW_BACKUP_DIR, else <data dir>/backups)")
    backup.add_argument("--no-verify", action="store_true", help="skip the restore into a scratch database")
    backup.add_argument("--prune", action="store_true",
                        help="then delete backups older than GRADEFLOW_BACKUP_RETENTION_DAYS (the newest verified "
                             "one is kept)")
    restore = sub.add_parser("restore", help="restore a backup into an empty database (created if missing)")
    restore.add_argument("file", help="the .dump file (its .json manifest beside it)")
    restore.add_argument("--database-url", help="owner/superuser URL of the target database (default "
                                                "GRADEFLOW_DATABASE_ADMIN_URL, else GRADEFLOW_DATABASE_URL)")
    restore.add_argument("--force", action="store_true",
                         help="restore into a database that is not empty (replaces what the backup holds)")
    trace = sub.add_parser("trace", help="print a stored trace as a span tree with durations (every tenant's "
                                         "spans and the system spans: an operator's view)")
    trace.add_argument("trace_id", help="the trace id (32 hex digits, as in the 202 reply and log lines)")
    add_client_parsers(sub)  # exams, submit, watch, review, list: through the HTTP API (infra.client)
    return parser


def _add_dlq_parser(sub) -> None:  # type: ignore[no-untyped-def]
    kinds = ["outbox", "external_event", "submission", "webhook"]  # infra.events.dead_letters.KINDS (not imported:
    statuses = ["open", "replayed", "discarded", "resolved"]        # the parser stays light), checked by a test
    dlq = sub.add_parser("dlq", help="dead letters: outbox events, external events and submissions that gave up "
                                     "(list, show, replay, discard)")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="one line per dead letter, oldest first")
    listing.add_argument("--status", choices=[*statuses, "all"], default="open", help="which records (default open)")
    listing.add_argument("--kind", choices=kinds, help="only this kind")
    listing.add_argument("--tenant", help="only this tenant")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show = actions.add_parser("show", help="everything about one dead letter, with its payload and audit trail")
    show.add_argument("id", type=int, help="dead letter id (from `gradeflow dlq list`)")
    for name, text in (("replay", "replay it through its normal path: an outbox event back to pending, an external "
                                  "event back on its stream, a submission retried from its last checkpoint"),
                       ("discard", "give it up for good (an outbox event's later events go on)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("id", type=int, help="dead letter id (from `gradeflow dlq list`)")
        action.add_argument("--actor", default="operator-cli", help="who does it (default operator-cli; audited)")
        action.add_argument("--reason", required=True, help="why (kept in the audit trail)")


def _configure_logging(level: str, log_format: str = "text") -> None:
    from infra.observability.logs import configure_logging

    configure_logging(level, log_format, stream=sys.stderr)


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
    from infra.stack.preflight import check_all, check_model

    if queue in ("cognitive", "all"):
        check_model(settings)  # before connecting anything: a missing provider package is one line
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
    """Run the relay, the reconciler and the external-event bridge until SIGTERM/SIGINT.

    The relay publishes outbox events (each submission event also repairs that submission's hot copy);
    the reconciler starts gradings of submissions left ``queued`` (:mod:`infra.temporal.reconciler`);
    the bridge turns the Redis stream of external events into ``external_event`` signals; every event
    also becomes webhook deliveries (:mod:`infra.webhooks.fanout`) that the webhook dispatcher sends
    (:mod:`infra.webhooks.dispatcher`). All of them share the relay's stop signal.
    """
    import os
    import socket

    from redis.asyncio import Redis

    from infra.cache.copies import Cache
    from infra.constants import SUBMISSION_EVENTS
    from infra.db.pools import PoolManager
    from infra.events.external import ExternalEventBridge
    from infra.events.relay import EVERY_EVENT, run_relay
    from infra.stack.preflight import connect_temporal
    from infra.stores.submissions import copy_repair_handler
    from infra.temporal.reconciler import StrandedReconciler
    from infra.webhooks.dispatcher import WebhookDispatcher
    from infra.webhooks.fanout import webhook_fanout

    client = await connect_temporal(str(settings.temporal_address), settings.temporal_namespace)
    stop = asyncio.Event()
    redis = Redis.from_url(str(settings.redis_url), decode_responses=True)
    repair = copy_repair_handler(Cache(redis, ttl_seconds=settings.cache_ttl_seconds))
    handlers = {event_type.value: repair for event_type in SUBMISSION_EVENTS}
    pools = PoolManager(str(settings.database_url), None, min_size=1, max_size=2, name="gradeflow-reconciler")
    await pools.open()
    hook_pools = PoolManager(str(settings.database_url), None, min_size=1, max_size=4, name="gradeflow-webhooks")
    await hook_pools.open()
    dispatcher = WebhookDispatcher.from_settings(hook_pools, settings)
    handlers[EVERY_EVENT] = webhook_fanout(hook_pools, wake=dispatcher.wake)
    dispatcher_task = asyncio.create_task(dispatcher.run(stop), name="webhook-dispatcher")
    reconciler = StrandedReconciler(pools, client, grace_seconds=settings.reconcile_after_seconds,
                                    interval_seconds=settings.reconcile_interval_seconds, settings=settings)
    reconciler_task = asyncio.create_task(reconciler.run(stop), name="reconciler")
    bridge = ExternalEventBridge(redis, client, consumer_name=f"relay-{socket.gethostname()}-{os.getpid()}",
                                 pools=pools, give_up_after=settings.external_event_give_up_seconds)
    bridge_task = asyncio.create_task(bridge.run(stop), name="external-event-bridge")
    try:
        await run_relay(settings, handlers=handlers, stop=stop)
    finally:
        stop.set()
        for task in (bridge_task, reconciler_task, dispatcher_task):
            try:
                await asyncio.wait_for(task, settings.shutdown_timeout)  # cancelled if it overruns
            except TimeoutError:
                pass
        await redis.aclose()
        await pools.close()
        await hook_pools.close()


def _cmd_token(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.security.tokens import mint_token

    try:
        token = mint_token(settings, tenant=args.tenant, roles=args.role or ["submitter"], sub=args.sub,
                           ttl_seconds=args.ttl)
    except ValueError as exc:
        print(f"gradeflow: token --tenant {args.tenant!r}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def _cmd_retry(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.preflight import check_all

    asyncio.run(check_all(settings, redis=False))
    return asyncio.run(_retry(settings, args))


async def _retry(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.db.pools import PoolManager
    from infra.stack.preflight import connect_temporal
    from infra.stores.interventions import NotRetryableError, SubmissionNotFoundError
    from infra.temporal.retry import RetryInProgressError, retry_submission

    client = await connect_temporal(str(settings.temporal_address), settings.temporal_namespace)
    async with PoolManager.from_settings(settings, name="gradeflow-cli") as pools:
        try:
            started = await retry_submission(pools, client, tenant_id=args.tenant, submission_id=args.submission_id,
                                             actor_id=args.actor, reason=args.reason, settings=settings)
        except SubmissionNotFoundError:
            print(f"gradeflow: no submission {args.submission_id} for tenant {args.tenant}", file=sys.stderr)
            return EXIT_FAILURE
        except (NotRetryableError, RetryInProgressError) as exc:
            print(f"gradeflow: cannot retry {args.submission_id}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    resume = f"resumes from checkpoint thread {started.resume_thread_id}" if started.resume_thread_id else \
        "grades afresh (no earlier run)"
    print(f"retry of {started.submission_id} started: workflow {started.workflow_id} run {started.run_id}; {resume}")
    return 0


def _cmd_dlq(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.preflight import check_database, require

    if getattr(args, "limit", 1) < 1:
        print(f"gradeflow: dlq list --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return EXIT_CONFIG
    require(settings, "database_url")
    asyncio.run(check_database(str(settings.database_url)))
    return asyncio.run(_dlq(settings, args))


async def _dlq(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.db.pools import PoolManager
    from infra.events import dead_letters as dlq

    redis_url = str(settings.redis_url) if settings.redis_url else None
    async with PoolManager(str(settings.database_url), redis_url, min_size=0, max_size=1,
                           acquire_timeout=settings.db_acquire_timeout, name="gradeflow-cli") as pools:
        try:
            if args.dlq_command == "list":
                status = None if args.status == "all" else args.status
                items = await dlq.list_dead_letters(pools, status=status, kind=args.kind, tenant_id=args.tenant,
                                                    limit=args.limit)
                for item in items:
                    print(_dlq_line(item))
                if not items:
                    print(" ".join(["no", *(w for w in (status, args.kind) if w), "dead letters"]))
            elif args.dlq_command == "show":
                item = await dlq.get_dead_letter(pools, args.id)
                _print_dlq_item(item, await dlq.dead_letter_actions(pools, item.id, tenant_id=item.tenant_id))
            elif args.dlq_command == "replay":
                print(await _dlq_replay(settings, pools, args))
            else:
                item = await dlq.discard_dead_letter(pools, args.id, actor=args.actor, reason=args.reason)
                after = f"; {item.blocking} later event(s) of its aggregate go on" if item.kind == "outbox" else ""
                print(f"discarded dead letter {item.id}: {item.kind} {item.reference_id} will not be replayed{after}")
        except dlq.DeadLetterError as exc:
            print(f"gradeflow: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    return 0


async def _dlq_replay(settings, pools, args: argparse.Namespace) -> str:  # type: ignore[no-untyped-def]
    """Replay one dead letter; for a submission, Temporal is connected and the operator retry runs."""
    from infra.events import dead_letters as dlq
    from infra.events.external import republish_dead_letter

    tenant = await dlq.item_tenant(pools, args.id)
    item = await dlq.get_dead_letter(pools, args.id, tenant_id=tenant)
    if item.kind == "submission" and item.status == "open":
        from infra.stack.preflight import connect_temporal
        from infra.stores.interventions import NotRetryableError, SubmissionNotFoundError
        from infra.temporal.retry import RetryInProgressError, submission_retry

        client = await connect_temporal(str(settings.temporal_address), settings.temporal_namespace)
        try:
            item = await dlq.replay_dead_letter(pools, args.id, actor=args.actor, reason=args.reason, tenant_id=tenant,
                                                retry=submission_retry(pools, client, settings=settings))
        except (NotRetryableError, RetryInProgressError, SubmissionNotFoundError) as exc:
            raise dlq.DeadLetterConflictError(f"dead letter {args.id}: cannot retry submission "
                                              f"{item.reference_id}: {exc}") from exc
        return f"replayed dead letter {item.id}: submission {item.reference_id} is grading again (retried)"
    item = await dlq.replay_dead_letter(pools, args.id, actor=args.actor, reason=args.reason, tenant_id=tenant,
                                        republish=lambda payload: republish_dead_letter(pools.redis, payload))
    if item.kind == "external_event":
        return f"replayed dead letter {item.id}: external event {item.reference_id} is on its stream again"
    return f"replayed dead letter {item.id}: event {item.reference_id} ({item.event_type}) is pending again"


def _dlq_line(item) -> str:  # type: ignore[no-untyped-def]
    error = textwrap.shorten(item.last_error, 100, placeholder="...")
    return (f"{item.id}\t{item.status}\t{item.kind}\t{item.event_type or '-'}\ttenant={item.tenant_id}\t"
            f"ref={item.reference_id}\tattempts={item.attempts}\tblocking={item.blocking}\t"
            f"last_failed={item.last_failed_at.isoformat(timespec='seconds')}\t{error}")


def _print_dlq_item(item, actions) -> None:  # type: ignore[no-untyped-def]
    import json

    for name in ("id", "status", "kind", "event_type", "tenant_id", "reference_id", "attempts", "blocking",
                 "first_failed_at", "last_failed_at", "updated_at", "resolved_by", "resolved_at", "resolution_reason",
                 "first_error", "last_error"):
        value = getattr(item, name)
        print(f"{name + ':':<19}{value.isoformat() if hasattr(value, 'isoformat') else value}")
    print("payload:")
    print(textwrap.indent(json.dumps(item.payload, indent=2, sort_keys=True, default=str), "  "))
    print("audit:" if actions else "audit: (none)")
    for action in actions:
        print(f"  {action.created_at.isoformat(timespec='seconds')}\t{action.action}\tby {action.actor}\t"
              f"{action.reason or '-'}\t{json.dumps(action.detail, sort_keys=True, default=str)}")


def _cmd_trace(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.preflight import check_database, require
    from infra.stores.traces import normalise_trace_id

    trace_id = normalise_trace_id(args.trace_id)
    if trace_id is None:
        print(f"gradeflow: trace {args.trace_id!r}: not a trace id (32 hex digits, not all zero)", file=sys.stderr)
        return EXIT_CONFIG
    require(settings, "database_url")
    asyncio.run(check_database(str(settings.database_url)))
    return asyncio.run(_trace(settings, trace_id))


async def _trace(settings, trace_id: str) -> int:  # type: ignore[no-untyped-def]
    from infra.db.pools import PoolManager
    from infra.observability.spantree import render_tree
    from infra.stores.traces import load_trace

    async with PoolManager(str(settings.database_url), None, min_size=0, max_size=1,
                           acquire_timeout=settings.db_acquire_timeout, name="gradeflow-cli") as pools:
        roots = await load_trace(pools, trace_id, tenant_id=None)
    print(render_tree(trace_id, roots))
    return 0 if roots else EXIT_FAILURE


def _cmd_backup(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from infra.db.backup import BackupError, create_backup, prune_backups
    from infra.stack.preflight import check_database

    url = settings.admin_url
    if url is None:
        raise ConfigError("GRADEFLOW_DATABASE_ADMIN_URL", "is not set (the owner URL that pg_dump reads with)")
    asyncio.run(check_database(url, "GRADEFLOW_DATABASE_ADMIN_URL" if settings.database_admin_url
                               else "GRADEFLOW_DATABASE_URL"))
    directory = Path(args.dir) if args.dir else settings.backup_path
    try:
        result = asyncio.run(create_backup(url, directory, bin_dir=settings.pg_bin_dir, verify=not args.no_verify,
                                           log=print))
    except BackupError as exc:
        print(f"gradeflow: backup failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.prune:
        for gone in prune_backups(directory, settings.backup_retention_days):
            print(f"pruned {gone}")
    verification = result.verification
    return EXIT_FAILURE if verification is not None and not verification.ok else 0


def _cmd_restore(settings, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from infra.db.backup import BackupError
    from infra.db.restore import NotEmptyError, restore_backup

    url = args.database_url or settings.admin_url
    if url is None:
        raise ConfigError("GRADEFLOW_DATABASE_ADMIN_URL", "is not set (or pass --database-url)")
    try:
        result = asyncio.run(restore_backup(Path(args.file), url, force=args.force,
                                            app_password=settings.app_db_password, bin_dir=settings.pg_bin_dir,
                                            log=print))
    except NotEmptyError as exc:
        print(f"gradeflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BackupError as exc:
        print(f"gradeflow: restore failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if result.mismatches else 0


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _cmd_dev(settings, cognitive_workers: int = 1) -> int:  # type: ignore[no-untyped-def]
    from infra.stack.devserver import run_dev
    from infra.stack.preflight import check_model

    check_model(settings)  # before the stack starts: the cognitive worker would fail after the banner

    return run_dev(settings, cognitive_workers=cognitive_workers)


def _run(args: argparse.Namespace) -> int:
    from infra.settings import get_settings

    settings = get_settings()
    _configure_logging(settings.log_level, settings.log_format)
    commands: dict[str, Callable[[], int]] = {
        "dev": lambda: _cmd_dev(settings, args.cognitive_workers),
        "migrate": lambda: _cmd_migrate(settings),
        "api": lambda: _cmd_api(settings),
        "worker": lambda: _cmd_worker(settings, args.queue),
        "relay": lambda: _cmd_relay(settings),
        "token": lambda: _cmd_token(settings, args),
        "dlq": lambda: _cmd_dlq(settings, args),
        "backup": lambda: _cmd_backup(settings, args),
        "restore": lambda: _cmd_restore(settings, args),
        "retry": lambda: _cmd_retry(settings, args),
        "trace": lambda: _cmd_trace(settings, args),
        **{name: (lambda: run_client(settings, args)) for name in CLIENT_COMMANDS},
    }
    return commands[args.command]()


def _format_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = "_".join(str(part) for part in error["loc"] if not isinstance(part, int))
        index = "".join(f"[{part}]" for part in error["loc"] if isinstance(part, int))  # a list item
        name = f"GRADEFLOW_{loc.upper()}{index}" if loc else "settings"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if loc else message)
    return "; ".join(problems)


def _format_settings_error(exc: SettingsError) -> str:
    """One line naming the setting whose value could not even be parsed (e.g. a list that is not JSON)."""
    match = re.search(r'field "([a-z0-9_]+)"', str(exc))
    if match is None:
        return str(exc).splitlines()[0]
    return f"GRADEFLOW_{match.group(1).upper()}: cannot be parsed (a list or mapping setting takes JSON, e.g. [5, 300])"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gradeflow`` console script."""
    args = build_parser().parse_args(argv)
    from infra.stack.embedded import EmbeddedStackError

    try:
        return _run(args)
    except ValidationError as exc:
        print(f"gradeflow: invalid setting: {_format_validation_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except SettingsError as exc:
        print(f"gradeflow: invalid setting: {_format_settings_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"gradeflow: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except EmbeddedStackError as exc:
        print("gradeflow: " + textwrap.shorten(str(exc), 2000), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


ONE_SHOT_TEMPORAL_COMMANDS = frozenset({"retry", "dlq"})
"""Commands that open a Temporal client and then end: they leave without interpreter teardown."""


def entry() -> None:
    """Console-script entry: run :func:`main` and exit with its code.

    The Temporal client's Rust threads can outlive a short command and abort the interpreter's
    teardown ("Fatal Python error: PyGILState_Release", exit -6, temporalio/sdk-python#300). The
    one-shot commands that opened a client therefore flush their output and leave with ``os._exit``.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in ONE_SHOT_TEMPORAL_COMMANDS:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
