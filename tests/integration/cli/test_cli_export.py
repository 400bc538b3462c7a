"""``gradeflow exams export`` as a subprocess against the real served API: file, stdout, one-line errors."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import uuid

from infra.security.tokens import mint_token
from tests.integration.api.conftest import api_url, question  # noqa: F401 - fixture
from tests.integration.api.test_api_gradebook import _seed
from tests.integration.cli.test_cli_client import cli, client_env, one_line_error, write


async def test_export_to_a_file_and_to_stdout_and_its_errors(api_url, services, app_settings, tenant_id,  # noqa: F811
                                                             pg_admin_url, tmp_path):
    reviewer = mint_token(app_settings, tenant=tenant_id, roles=["reviewer"])
    env = client_env(services, api_url, reviewer)
    exam_file = write(tmp_path, "exam.json", {"title": "T", "questions": [question("q1", "numeric"),
                                                                          question("q2", "numeric")]})
    exam_id = (await cli(env, "exams", "create", "-q", exam_file)).stdout.strip()
    _seed(pg_admin_url, tenant_id, exam_id, 1500)

    out = tmp_path / "grades.csv"
    done = await cli(env, "exams", "export", exam_id, "-o", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert rows[0][4:6] == ["q1", "q2"] and len(rows) == 1501
    assert [r[1] for r in rows[1:]] == [f"s-{i:06d}" for i in range(1, 1501)]
    assert f"wrote {out.stat().st_size} bytes to {out}" in done.stderr
    assert not (tmp_path / "grades.csv.part").exists()

    lines = await cli(env, "exams", "export", exam_id, "--format", "jsonl", "--feedback")
    assert lines.returncode == 0, lines.stderr
    objects = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [o["submission_id"] for o in objects] == [r[0] for r in rows[1:]]
    assert set(objects[0]["feedback"]) == {"q1", "q2"}

    missing = tmp_path / "missing.csv"
    gone = await cli(env, "exams", "export", str(uuid.uuid4()), "-o", str(missing))
    one_line_error(gone, 2, "export exam", "404")
    assert not missing.exists() and not (tmp_path / "missing.csv.part").exists()
    unwritable = await cli(env, "exams", "export", exam_id, "-o", str(tmp_path / "no-such-dir" / "g.csv"))
    one_line_error(unwritable, 2, "-o ", "cannot write it")
    submitter = client_env(services, api_url, mint_token(app_settings, tenant=tenant_id, roles=["submitter"]))
    one_line_error(await cli(submitter, "exams", "export", exam_id), 2, "403", "GRADEFLOW_TOKEN")


async def test_a_reader_that_stops_early_is_not_an_error(api_url, services, app_settings, tenant_id,  # noqa: F811
                                                         pg_admin_url, tmp_path):
    env = client_env(services, api_url, mint_token(app_settings, tenant=tenant_id, roles=["reviewer"]))
    exam_file = write(tmp_path, "exam.json", {"title": "T", "questions": [question("q1", "numeric")]})
    exam_id = (await cli(env, "exams", "create", "-q", exam_file)).stdout.strip()
    _seed(pg_admin_url, tenant_id, exam_id, 5000)  # far more than a pipe holds

    def head() -> tuple[int, bytes, bytes]:  # `gradeflow exams export ID | head -c 100`
        proc = subprocess.Popen([sys.executable, "-m", "infra.cli", "exams", "export", exam_id], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.read(100)
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=120), first, err

    code, first, err = await asyncio.to_thread(head)
    assert first.startswith(b"submission_id,student_id,")
    assert code == 0 and b"Traceback" not in err and b"BrokenPipe" not in err, err
