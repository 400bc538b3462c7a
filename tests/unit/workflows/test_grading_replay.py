"""Recorded histories of GradingWorkflow replay on today's code (no non-determinism error).

A change of the workflow's commands must be behind ``workflow.patched`` so runs that started before a
deploy finish on the new workers. ``histories/grading_activities_v1.json`` was recorded from a real
run of the code before load and persist became local activities (commit d39d607: three activity
tasks and a progress signal); it replays through the patch's old branch.
``grading_local_activities_v2.json`` is a run of the code after it (two workflow tasks, local
activity markers, status search attribute upserts).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.grading import GradingWorkflow

HISTORIES = Path(__file__).parent / "histories"


@pytest.mark.parametrize("name", sorted(p.name for p in HISTORIES.glob("*.json")))
async def test_recorded_history_replays(name: str) -> None:
    raw = (HISTORIES / name).read_text()
    history = WorkflowHistory.from_json(f"replay-{name}", raw)
    kinds = [e["eventType"] for e in json.loads(raw)["events"]]
    assert kinds[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"  # a whole run, not a prefix
    result = await Replayer(workflows=[GradingWorkflow]).replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
