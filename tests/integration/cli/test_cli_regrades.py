# ruff: noqa: F811 - pytest fixtures (api_url) are imported from the API tests
"""``gradeflow history`` and ``gradeflow regrade-requests list|accept|reject`` as subprocesses against the real API."""

from __future__ import annotations

import httpx

from infra.security.tokens import mint_token
from tests.integration.api.conftest import GOOD_ANSWERS, api_url, exam_body  # noqa: F401 - fixture
from tests.integration.api.test_api_review import MAX_POINTS, complete_submission
from tests.integration.cli.test_cli_client import cli, client_env, one_line_error


async def test_history_and_regrade_requests_from_the_command_line(api_url, services, app_settings, tenant_id, pools,
                                                                  temporal_client):
    reviewer = mint_token(app_settings, tenant=tenant_id, roles=["reviewer"], sub="teacher-cli")
    lms = mint_token(app_settings, tenant=tenant_id, roles=["submitter"], sub="lms-cli")
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        exam = await http.post("/v1/exams", json=exam_body(), headers={"Authorization": f"Bearer {reviewer}"})
        sub = await http.post("/v1/submissions", json={"exam_id": exam.json()["id"], "student_id": "s1",
                                                       "answers": GOOD_ANSWERS},
                              headers={"Authorization": f"Bearer {lms}"})
        sid = sub.json()["submission_id"]
        await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("graded by the test")
        await complete_submission(pools, tenant_id, sid, {q: (0.0, m) for q, m in MAX_POINTS.items()})
        asked = []
        for qid in ("q2", "q3"):
            req = await http.post(f"/v1/submissions/{sid}/regrade-requests", json={"question_id": qid,
                                                                                  "reason": f"look at {qid}"},
                                  headers={"Authorization": f"Bearer {lms}"})
            assert req.status_code == 201, req.text
            asked.append(req.json()["id"])
    env = client_env(services, api_url, reviewer)

    listed = await cli(env, "regrade-requests", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(rid in listed.stdout for rid in asked) and "look at q2" in listed.stdout

    accepted = await cli(env, "regrade-requests", "accept", asked[0], "--score", "1.5", "--reason", "fair")
    assert accepted.returncode == 0, accepted.stderr
    assert f"regrade request {asked[0]} accepted (0 -> 1.5)" in accepted.stdout
    rejected = await cli(env, "regrade-requests", "reject", asked[1], "--reason", "rubric says so")
    assert rejected.returncode == 0 and f"regrade request {asked[1]} rejected" in rejected.stdout
    again = await cli(env, "regrade-requests", "reject", asked[1], "--reason", "twice")
    one_line_error(again, 2, f"reject {asked[1]}", "409")
    none_open = await cli(env, "regrade-requests", "list")
    assert none_open.returncode == 0 and "no open regrade requests" in none_open.stdout

    history = await cli(env, "history", sid)
    assert history.returncode == 0, history.stderr
    lines = [line for line in history.stdout.splitlines() if " request " in f" {line} "]
    assert len(lines) == 1 and "q2" in lines[0] and "1.5" in lines[0] and "teacher-cli" in lines[0]
    bad = await cli(env, "regrade-requests", "accept", asked[0], "--score", "-1")
    assert bad.returncode == 2 and "--score" in bad.stderr
