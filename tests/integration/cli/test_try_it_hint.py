"""The "try it" hint of ``gradeflow dev``: its commands, run verbatim in bash, grade the example live."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from infra.stack.try_it import DEMO_TENANT, demo_token, try_it_hint
from tests.integration.cli.test_cli_watch_progress import slow_api_url  # noqa: F401 - fixture
from tests.integration.workflows.harness import saver  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[3]


def _commands(hint: str) -> list[str]:
    """The shell lines of the hint (indented under "In another terminal")."""
    after = hint.split("In another terminal", 1)[1].splitlines()[1:]
    return [line.strip() for line in after if line.startswith("      ")]


def _bash(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL)


async def test_the_hints_commands_create_the_example_exam_and_watch_its_grading(slow_api_url, app_settings,  # noqa: F811
                                                                                temporal_client) -> None:
    hint = try_it_hint(slow_api_url, "http://127.0.0.1:8233", demo_token(app_settings))
    assert f"Dashboard       {slow_api_url}/ui\n" in hint
    assert f"API docs        {slow_api_url}/docs\n" in hint
    assert "Temporal Web UI http://127.0.0.1:8233" in hint
    assert "GRADEFLOW_DEMO_GRADER_DELAY_SECONDS=1 make run" in hint  # no delay set: says how to slow grading
    commands = _commands(hint)
    assert len(commands) == 3 and commands[-1].endswith("--watch"), commands

    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("GRADEFLOW_")}
    env["GRADEFLOW_JWT_SECRET"] = app_settings.jwt_secret  # the API's; `gradeflow dev` shares its own
    done = await asyncio.to_thread(_bash, "\n".join(commands), env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    sid = re.search(r"submission (\S+) accepted", done.stdout)
    assert sid is not None, done.stdout
    # graded live, question by question, ending with the result table of the example's student
    assert [n for n in re.findall(r"^\s+q\d graded \((\d)/5\)", done.stdout, re.MULTILINE)] == list("12345")
    assert f"submission {sid.group(1)} · student student-42 · " in done.stdout, done.stdout
    description = await temporal_client.get_workflow_handle(f"grade-{sid.group(1)}").describe()
    assert (await description.memo())["tenant_id"] == DEMO_TENANT


def test_a_set_delay_is_named_in_the_hint() -> None:
    hint = try_it_hint("http://127.0.0.1:8000", "http://127.0.0.1:8233", "t0k3n", grader_delay=1.5)
    assert "graders take 1.5s per question (GRADEFLOW_DEMO_GRADER_DELAY_SECONDS)" in hint
    assert "export GRADEFLOW_API_URL=http://127.0.0.1:8000 GRADEFLOW_TOKEN=t0k3n" in hint
