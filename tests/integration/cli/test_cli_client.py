"""The client commands (exams create, submit, watch, review, list) as subprocesses against the real served API."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.security.tokens import mint_token
from tests.integration.api.conftest import GOOD_ANSWERS, api_url, exam_body  # noqa: F401 - fixture
from tests.integration.api.server import running_server
from tests.integration.api.test_api_review import GRADED, MAX_POINTS, complete_submission
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixture


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


async def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, env, *args, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradeflow: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def client_env(services: Any, url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in services.env().items() if k not in ("COLUMNS", "GRADEFLOW_API_URL")}
    env.update(GRADEFLOW_API_URL=url, GRADEFLOW_TOKEN=token)
    return env


def write(tmp_path: Path, name: str, body: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_exams_submit_list_review_and_their_one_line_errors(api_url, services, app_settings, tenant_id,  # noqa: F811
                                                                  pools, temporal_client, tmp_path):
    admin = mint_token(app_settings, tenant=tenant_id, roles=["admin"])
    env = client_env(services, api_url, admin + "\n")  # `gradeflow token` output, newline and all
    exam_file = write(tmp_path, "exam.json", exam_body("Biology CLI"))

    created = await cli(env, "exams", "create", exam_file)
    assert created.returncode == 0, created.stderr
    assert "created: 'Biology CLI' (4 questions)" in created.stdout
    quiet = await cli(env, "exams", "create", "-q", exam_file)
    exam_id = quiet.stdout.strip()
    assert quiet.returncode == 0 and len(exam_id) == 36, quiet

    answers = write(tmp_path, "answers.json", {"answers": GOOD_ANSWERS})
    submitted = await cli(env, "submit", answers, "--exam", exam_id, "--student", "s-cli", "-q")
    assert submitted.returncode == 0, submitted.stderr
    sid = submitted.stdout.strip()
    again = await cli(env, "submit", answers, "--exam", exam_id, "--student", "s-cli-2")
    assert again.returncode == 0 and "accepted (queued; workflow grade-" in again.stdout, again

    listed = await cli(env, "list", "submissions", "--status", "queued")
    assert listed.returncode == 0, listed.stderr
    assert sid in listed.stdout and "s-cli" in listed.stdout and "queued" in listed.stdout
    assert "no needs_review submissions" in (await cli(env, "list", "submissions", "--status", "needs_review")).stdout
    exams = await cli(env, "list", "exams")
    assert exams.returncode == 0 and exam_id in exams.stdout and "Biology CLI" in exams.stdout

    # a completed submission: reviewed through the override saga, watched (already settled: table at once)
    await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("graded by the test")
    await complete_submission(pools, tenant_id, sid, {q: (s, MAX_POINTS[q]) for q, s in GRADED.items()})
    reviewer = mint_token(app_settings, tenant=tenant_id, roles=["reviewer"], sub="teacher-1")
    reviewed = await cli(env, "review", sid, "--override", "q3=0.5", "--feedback", "q3=too vague",
                         "--reason", "rubric says so", "--token", reviewer)
    assert reviewed.returncode == 0, reviewed.stderr
    assert f"submission {sid} overridden (q3=0.5): status completed" in reviewed.stdout
    assert "too vague" in reviewed.stdout and "overridden" in reviewed.stdout
    watched = await cli(env, "watch", sid, "--timeout", "30")
    assert watched.returncode == 0, watched.stderr
    assert f"submission {sid} · student s-cli · completed · total 6.5 / 10" in watched.stdout, watched.stdout

    # one line each, naming what to fix
    one_line_error(await cli(env, "review", sid, "--approve", "--token", "not-a-jwt"), 2, "401", "--token")
    submitter = mint_token(app_settings, tenant=tenant_id, roles=["submitter"])
    one_line_error(await cli(env, "review", sid, "--approve", "--token", submitter), 2, "403", "--token")
    missing = "00000000-0000-4000-8000-000000000000"
    one_line_error(await cli(env, "watch", missing), 2, "404")
    one_line_error(await cli(env, "review", missing, "--approve"), 2, "404")
    one_line_error(await cli(env, "review", sid, "--override", "q9=1"), 2, "422", "overrides.q9")
    bad_exam = write(tmp_path, "bad.json", {"title": "x", "questions": []})
    one_line_error(await cli(env, "exams", "create", bad_exam), 2, "422", "questions")
    (tmp_path / "broken.json").write_text("{nope")
    one_line_error(await cli(env, "exams", "create", str(tmp_path / "broken.json")), 2, "broken.json", "not JSON")
    one_line_error(await cli(env, "submit", answers), 2, "exam_id", "--exam")
    one_line_error(await cli(env, "list", "exams", "--api", f"http://127.0.0.1:{_closed_port()}"), 2,
                   "cannot reach the API", "--api")
    one_line_error(await cli({**env, "GRADEFLOW_API_URL": f"http://127.0.0.1:{_closed_port()}"}, "list", "exams"),
                   2, "cannot reach the API", "GRADEFLOW_API_URL")
    no_token = {k: v for k, v in env.items() if k != "GRADEFLOW_TOKEN"}
    one_line_error(await cli(no_token, "list", "exams"), 2, "GRADEFLOW_TOKEN", "--token")


@pytest.fixture
async def review_api_url(app_settings, temporal_client, task_queue, pools, saver) -> Any:  # noqa: F811
    """The real API whose gradings always need review, with real grading workers on its queues."""
    from api.app import create_app

    app = create_app(app_settings, temporal_client=temporal_client,
                     grading_options={"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog",
                                      "low_confidence_threshold": 0.99})
    async with grading_workers(temporal_client, pools, saver, app_settings, task_queue), running_server(app) as url:
        yield url


async def test_submit_watch_lists_the_review_queue_and_approves(review_api_url, services, app_settings, tenant_id,
                                                                tmp_path):
    env = client_env(services, review_api_url, mint_token(app_settings, tenant=tenant_id, roles=["admin"]))
    async with httpx.AsyncClient(base_url=review_api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {env['GRADEFLOW_TOKEN']}"}) as http:
        exam = await http.post("/v1/exams", json=exam_body())
        assert exam.status_code == 201, exam.text
    body = write(tmp_path, "submission.json", {"exam_id": exam.json()["id"], "student_id": "s-live",
                                               "answers": GOOD_ANSWERS})

    watched = await cli(env, "submit", body, "--watch", "--timeout", "90")
    assert watched.returncode == 0, (watched.stdout, watched.stderr)
    sid = watched.stdout.split("submission ", 1)[1].split()[0]
    # the progress lines ("1/4 questions graded", ...) are there when the feed opened before grading ended
    assert f"submission {sid} · student s-live · needs_review · total 10 / 10" in watched.stdout, watched.stdout
    assert "flagged" in watched.stdout, watched.stdout
    for q in ("q1", "q2", "q3", "q4"):
        assert q in watched.stdout

    queue = await cli(env, "list", "submissions", "--status", "needs_review")
    assert queue.returncode == 0 and sid in queue.stdout, queue

    approved = await cli(env, "review", sid, "--approve", "--reason", "looks right")
    assert approved.returncode == 0, approved.stderr
    assert f"submission {sid} approved: status completed" in approved.stdout
    assert sid not in (await cli(env, "list", "submissions", "--status", "needs_review")).stdout
