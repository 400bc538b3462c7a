"""``examples/submission.sh`` as a user runs it: it finds the API on ``GRADEFLOW_API_PORT`` and says what
to do when no API answers there."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.api.conftest import closed_port  # noqa: F401 - fixture
from tests.integration.api.server import serve_app

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "submission.sh"


async def _run(env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec("bash", str(SCRIPT), env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def _env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADEFLOW_") and k not in ("API", "TOKEN")}
    return {**env, "GRADEFLOW_API_PORT": str(port), **extra}


async def test_submission_example_uses_the_api_port_and_explains_a_missing_api(app_settings, temporal_client,
                                                                              task_queue, closed_port) -> None:  # noqa: F811
    code, out, err = await _run(_env(closed_port))
    assert code == 1 and out == ""
    assert f"no gradeflow API answers at http://127.0.0.1:{closed_port}" in err and "make run" in err

    async with serve_app(app_settings, temporal_client, task_queue) as url:
        port = urlsplit(url).port
        assert port is not None
        code, out, err = await _run(_env(port, WAIT_SECONDS="1", GRADEFLOW_JWT_SECRET=app_settings.jwt_secret))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("exam: ") and lines[1].startswith("submitted: ")
    sid = json.loads(lines[1].removeprefix("submitted: "))["submission_id"]
    shown = json.loads("\n".join(lines[2:-1]))
    assert shown["id"] == sid and shown["student_id"] == "student-42"
    assert f"ws://127.0.0.1:{port}/v1/ws/submissions/{sid}" in lines[-1]
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("test done")
