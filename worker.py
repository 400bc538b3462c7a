"""Start the gradeflow Temporal workers: ``python worker.py --queue orchestration|cognitive|all``.

This module only connects, builds dependencies and registers workflows and activities.

The cognitive worker sleeps ``GRADEFLOW_DEMO_GRADER_DELAY_SECONDS`` (a setting, refused in prod)
after grading each question, before its grade is checkpointed: demos can watch progress and
end-to-end tests can kill a worker mid-run. Test hook, refused when ``GRADEFLOW_ENV=prod``:
``GRADEFLOW_TEST_GRADER_LOG`` (a file path) appends ``<submission_id> <question_id> <attempt> <unix
time>`` for every grader call the moment the grade comes back, so tests count real grader calls
(re-grades included) even across a SIGKILL: ``grader_calls`` rows are written with the checkpoint,
so a grade lost with a killed worker has none.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any, Literal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.agent import AgentActivities, GradeCall, GradeHook
from activities.backup import BackupActivities
from activities.batch import BatchActivities
from activities.grading import GradingActivities
from activities.maintenance import MaintenanceActivities
from agents.checkpointer import open_saver
from infra.constants import COGNITIVE_QUEUE, ORCHESTRATION_QUEUE
from infra.db.pools import PoolManager
from infra.observability.logs import configure_logging
from infra.observability.metrics import POOLS, psycopg_pool_sample, start_metrics_server, temporal_runtime
from infra.observability.tracing import setup_tracing, with_tracing
from infra.settings import Settings, get_settings
from infra.stores.rubrics import RubricCache
from workflows.backup import BackupWorkflow
from workflows.batch import BatchGradingWorkflow
from workflows.grading import GradingWorkflow
from workflows.purge import IdempotencyPurgeWorkflow

logger = logging.getLogger("gradeflow.worker")

Queue = Literal["orchestration", "cognitive", "all"]
TEST_GRADER_LOG_ENV = "GRADEFLOW_TEST_GRADER_LOG"
PASSTHROUGH_MODULES = ("redis", "psycopg", "psycopg_pool", "opentelemetry", "langchain_core", "langgraph",
                       "pydantic", "zstandard")
"""Libraries used by activities in the same process; shared with the workflow sandbox, not reloaded."""


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox runner for gradeflow workflows (activity libraries passed through)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES))


async def connect_temporal(settings: Settings, *, attempts: int = 30, delay: float = 0.5,
                           runtime: Runtime | None = None) -> Client:
    """Connect to Temporal, retrying while the server opens its port but does not answer yet.

    ``runtime``: the SDK runtime to use (e.g. one exporting its metrics, :func:`temporal_runtime`).
    """
    address = settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"
    for attempt in range(1, attempts + 1):
        try:
            return await Client.connect(address, namespace=settings.temporal_namespace, runtime=runtime)
        except Exception as exc:  # noqa: BLE001 - retried, then raised
            if attempt == attempts:
                raise
            logger.info("temporal at %s not ready (%r); retrying", address, exc)
            await asyncio.sleep(delay)
    raise RuntimeError("unreachable")


async def _ensure_backup_schedule(client: Client, settings: Settings) -> None:
    """Keep the nightly backup schedule at ``GRADEFLOW_BACKUP_TIME`` (or remove it when disabled); best effort."""
    from infra.temporal.schedules import BACKUP_SCHEDULE_ID, ensure_backup_schedule

    try:
        if settings.backup_schedule_enabled:
            await ensure_backup_schedule(client, at=settings.backup_time)
        else:
            await client.get_schedule_handle(BACKUP_SCHEDULE_ID).delete()
    except Exception as exc:  # noqa: BLE001 - the worker serves without it; the next start retries
        if settings.backup_schedule_enabled:
            logger.warning("could not ensure the nightly backup schedule: %s", exc)


def test_grader_log(settings: Settings) -> GradeHook | None:
    """Grade hook appending one line per grader call to ``GRADEFLOW_TEST_GRADER_LOG`` (test hook)."""
    path = os.environ.get(TEST_GRADER_LOG_ENV, "")
    if not path:
        return None
    if settings.env == "prod":
        raise RuntimeError(f"{TEST_GRADER_LOG_ENV} is a test hook and is refused in prod")

    async def log_call(call: GradeCall) -> None:
        line = f"{call.submission_id} {call.question_id} {call.attempt} {time.time():.6f}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one small O_APPEND write: atomic, and in the kernel before a SIGKILL
        finally:
            os.close(fd)

    return log_call


def build_model(settings: Settings) -> Any:
    """The chat model for text questions, if ``GRADEFLOW_LLM_MODEL`` is set."""
    if not settings.llm_model:
        return None
    from langchain.chat_models import init_chat_model

    return init_chat_model(settings.llm_model)


async def run_worker(settings: Settings, queue: Queue, *, stop: asyncio.Event | None = None,
                     task_queue: str | None = None, client: Client | None = None) -> None:
    """Run the worker(s) for ``queue`` until ``stop`` is set (or SIGTERM/SIGINT).

    Args:
        settings: Process settings.
        queue: ``orchestration`` (workflows + DB activities), ``cognitive`` (the agent) or ``all``.
        stop: Event that triggers a graceful shutdown; default: a new one set by signals.
        task_queue: Override of the task queue name (single queue only; tests).
        client: An existing Temporal client (default: connect from settings).

    """
    if task_queue and queue == "all":
        raise ValueError("task_queue can only override a single queue")
    if not settings.database_url:
        raise RuntimeError("GRADEFLOW_DATABASE_URL is not set (use `gradeflow dev` for the embedded stack)")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    if client is None:  # the SDK's metrics (polls, task latencies, slots) on their own port, if set
        runtime = temporal_runtime(settings.temporal_sdk_metrics_port, settings.metrics_host)
        client = with_tracing(await connect_temporal(settings, runtime=runtime))
    async with AsyncExitStack() as stack:
        stop_metrics = start_metrics_server(settings.worker_metrics_port, settings.metrics_host)
        if stop_metrics is not None:
            stack.callback(stop_metrics)
        pools = PoolManager.from_settings(settings, name=f"gradeflow-worker-{queue}")
        await pools.open()
        stack.push_async_callback(pools.close, settings.shutdown_timeout)
        rubric_cache = await stack.enter_async_context(RubricCache(pools, settings))
        setup_tracing(settings, f"gradeflow-worker-{queue}", pools)
        workers: list[Worker] = []
        if queue in ("orchestration", "all"):
            grading = GradingActivities(pools, settings, rubric_cache=rubric_cache)
            maintenance = MaintenanceActivities(pools)
            workers.append(Worker(
                client, task_queue=task_queue or ORCHESTRATION_QUEUE,
                workflows=[GradingWorkflow, BatchGradingWorkflow, IdempotencyPurgeWorkflow, BackupWorkflow],
                activities=[grading.load_grading_context, grading.persist_grading_result,
                            grading.set_status, grading.mark_needs_intervention,
                            maintenance.purge_expired_idempotency_keys, maintenance.prune_checkpoints,
                            BatchActivities(pools).publish_batch_progress,
                            BackupActivities(settings).run_backup],
                graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_timeout),
            ))
            if task_queue is None:
                await _ensure_backup_schedule(client, settings)
        if queue in ("cognitive", "all"):
            ckpt_pool = AsyncConnectionPool(
                str(settings.database_url), min_size=1, max_size=max(2, settings.db_pool_max // 2),
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}, open=False,
                name="gradeflow-checkpoints",
                # A connection broken by a PostgreSQL restart is dropped at checkout, not handed to a
                # checkpoint write: three writes on three dead idle connections used to spend all of a
                # write's tries in a millisecond, right after the database was back.
                check=AsyncConnectionPool.check_connection,
            )
            await ckpt_pool.open()
            stack.push_async_callback(ckpt_pool.close, settings.shutdown_timeout)
            stack.callback(POOLS.track("postgres", "gradeflow-checkpoints", lambda: psycopg_pool_sample(ckpt_pool)))
            saver = await stack.enter_async_context(open_saver(ckpt_pool))
            agent = AgentActivities(pools, saver, settings, build_model(settings),
                                    grade_hook=test_grader_log(settings), rubric_cache=rubric_cache)
            workers.append(Worker(
                client, task_queue=task_queue or COGNITIVE_QUEUE, activities=[agent.run_grading_agent],
                max_concurrent_activities=settings.cognitive_max_concurrent or None,
                graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_timeout),
            ))
        runs = [asyncio.create_task(w.run()) for w in workers]
        logger.info("worker %s running on %s", queue, [w.task_queue for w in workers])
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([stopped, *runs], return_when=asyncio.FIRST_COMPLETED)
        logger.info("worker %s shutting down", queue)
        await asyncio.wait_for(asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True),
                               settings.shutdown_timeout + 5)
        stopped.cancel()
        for run in runs:
            if run.done() and run.exception():
                raise run.exception()  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Run gradeflow Temporal workers.")
    parser.add_argument("--queue", choices=["orchestration", "cognitive", "all"], default="all")
    parser.add_argument("--task-queue", default=None, help="override the task queue name (single queue)")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings, args.queue, task_queue=args.task_queue))


if __name__ == "__main__":
    main()
