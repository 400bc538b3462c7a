"""How a failed agent run is reported to its workflow: outages retried, real failures not."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from temporalio.exceptions import ApplicationError

from activities.agent import _classify, _FirstFailure
from agents.checkpointer import CheckpointWriteError
from workflows.grading import AGENT_NON_RETRYABLE


def _write_error(cause: BaseException) -> CheckpointWriteError:
    try:
        raise CheckpointWriteError("aput_writes", 3, cause) from cause
    except CheckpointWriteError as exc:
        return exc


def test_checkpoint_writes_failing_on_an_unreachable_database_are_an_outage_the_workflow_retries() -> None:
    lost = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
    out = _classify(_write_error(lost), {})
    # Seen in `make chaos` (postgres_restart): raised as is, the error was named CheckpointWriteError,
    # which the workflow does not retry, and a 5 s restart left a submission in needs_intervention.
    assert isinstance(out, ApplicationError) and not out.non_retryable
    assert out.type not in AGENT_NON_RETRYABLE


def test_checkpoint_writes_refused_by_the_database_need_an_operator() -> None:
    refused = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    out = _classify(_write_error(refused), {})
    assert isinstance(out, ApplicationError) and out.non_retryable and out.type == "CheckpointWriteError"
    assert out.type in AGENT_NON_RETRYABLE


def test_other_outages_pass_through_and_other_failures_spend_the_grading_budget() -> None:
    lost = psycopg.OperationalError("connection refused")
    assert _classify(lost, {}) is lost
    out = _classify(ValueError("rubric engine bug"), {})
    assert isinstance(out, ApplicationError) and out.non_retryable and out.type == "GradingError"


async def test_a_failed_checkpoint_write_stops_the_run_at_once_instead_of_at_the_end_of_the_step() -> None:
    failure = _FirstFailure()
    cancelled = asyncio.Event()
    lost = psycopg.OperationalError("server closed the connection unexpectedly")

    async def grading_on() -> None:  # the step's other questions: they would not end by themselves
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def write_fails_soon() -> None:
        await asyncio.sleep(0.05)
        await asyncio.to_thread(failure.set, _write_error(lost))  # writes may fail on another thread

    writer = asyncio.create_task(write_fails_soon())
    with pytest.raises(CheckpointWriteError) as info:
        await asyncio.wait_for(failure.race(grading_on()), 30)  # a hang guard: race must not wait for the step
    await writer
    assert info.value.cause is lost and cancelled.is_set()


async def test_a_run_that_ends_first_keeps_its_own_outcome() -> None:
    assert await _FirstFailure().race(asyncio.sleep(0)) is None

    async def fails() -> None:
        raise ValueError("grader bug")

    with pytest.raises(ValueError, match="grader bug"):
        await _FirstFailure().race(fails())
