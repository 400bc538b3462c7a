"""A reviewer's override races a regrade of the same submissions, across real processes: no lost update.

The API (``gradeflow api``) and the workers (``python worker.py --queue all``) run as subprocesses on
the session's PostgreSQL, Redis and Temporal. Each round starts a regrade (``override_reviewed``: it
replaces reviewers' scores) of every submission while a review override of each submission is sent
at staggered moments. The two writers serialise on ``lock:submission:{id}`` and the version fence:
a review either commits (200) or is refused with a 409, never half-applied and never silently
overwritten. Afterwards, per submission: every accepted review is in the score history, in order;
each history row's old score is the previous row's new score (no change was overwritten unseen); and
the stored score is the last writer's.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from infra.security.tokens import mint_token
from tests.e2e.processes import stop, tail
from tests.integration.api.conftest import question

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = 4
ROUNDS = 3
STAGGER = 0.12
"""Seconds between the reviews of one round (the regrade starts with the first)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _until(what: str, check, procs: list[subprocess.Popen], log: Path, timeout: float = 120):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"a subprocess exited: {tail(log)}"
        try:
            result = await check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s: {tail(log)}")


async def test_review_racing_a_regrade_loses_no_update(services, app_settings, tenant_id, tmp_path):
    port = _free_port()
    env = {**services.env(), "GRADEFLOW_API_HOST": "127.0.0.1", "GRADEFLOW_API_PORT": str(port),
           "GRADEFLOW_JWT_SECRET": app_settings.jwt_secret, "GRADEFLOW_RATE_LIMIT_SUBMIT": "10000/minute",
           "GRADEFLOW_RATE_LIMIT_READ": "100000/minute", "GRADEFLOW_DEMO_GRADER_DELAY_SECONDS": "0.05",
           "GRADEFLOW_SHUTDOWN_TIMEOUT": "5"}
    log = tmp_path / "procs.log"
    procs = [_start(["-m", "infra.cli", "api"], env, log), _start(["worker.py", "--queue", "all"], env, log)]
    token = mint_token(app_settings, tenant=tenant_id, roles=["reviewer", "submitter"], sub="teacher-race")
    reviewer = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=reviewer) as http:
            async def up() -> bool:
                return (await http.get("/v1/health")).status_code == 200
            await _until("the API answering", up, procs, log)
            exam = await http.post("/v1/exams", json={"title": "Race", "questions": [question("q1"), question("q2")]})
            assert exam.status_code == 201, exam.text
            exam_id = exam.json()["id"]
            sids = []
            for i in range(STUDENTS):
                sub = await http.post("/v1/submissions", json={"exam_id": exam_id, "student_id": f"s{i}",
                                                               "answers": {"q1": "b", "q2": "b"}})
                assert sub.status_code == 202, sub.text
                sids.append(sub.json()["submission_id"])

            async def all_completed() -> bool:
                views = [(await http.get(f"/v1/submissions/{sid}")).json() for sid in sids]
                return all(v["status"] == "completed" for v in views)

            await _until("every submission graded", all_completed, procs, log)
            accepted: dict[str, list[float]] = {sid: [] for sid in sids}
            refused = 0
            for r in range(ROUNDS):
                score = 0.25 * (r + 1)

                async def regrade() -> str:
                    resp = await http.post(f"/v1/exams/{exam_id}/regrade",
                                           json={"scope": "ids", "submission_ids": sids, "override_reviewed": True})
                    assert resp.status_code == 202, resp.text
                    return resp.json()["batch_id"]

                async def review(sid: str, delay: float, score: float = score,
                                 reason: str = f"round {r}") -> tuple[str, int, float]:
                    await asyncio.sleep(delay)
                    resp = await http.post(f"/v1/submissions/{sid}/review",
                                           json={"overrides": {"q2": {"score": score}}, "reason": reason})
                    assert resp.status_code in (200, 409), resp.text
                    return sid, resp.status_code, score

                batch_id, *reviews = await asyncio.gather(
                    regrade(), *(review(sid, STAGGER * i) for i, sid in enumerate(sids)))
                for sid, code, given in reviews:
                    if code == 200:
                        accepted[sid].append(given)
                    else:
                        refused += 1

                async def batch_done(batch_id: str = batch_id) -> bool:
                    view = (await http.get(f"/v1/batches/{batch_id}")).json()
                    return view.get("source") == "database" and view.get("done") == view.get("total")

                await _until(f"regrade round {r}", batch_done, procs, log)
                await _until("every submission completed", all_completed, procs, log)

            regrade_rows = 0
            for sid in sids:
                history = (await http.get(f"/v1/submissions/{sid}/history", params={"page_size": 500})).json()
                assert history["next_cursor"] is None
                rows = [h for h in history["items"] if h["question_id"] == "q2"]
                assert rows[0]["old_score"] is None and rows[0]["source"] == "agent"
                for before, after in zip(rows, rows[1:], strict=False):
                    assert after["old_score"] == before["new_score"], rows  # every change saw the one before
                reviews = [h for h in rows if h["source"] == "review"]
                assert [h["new_score"] for h in reviews] == accepted[sid]  # every accepted review, in order
                assert all(h["actor_id"] == "teacher-race" for h in reviews)
                versions = [h["submission_version"] for h in history["items"]]
                assert versions == sorted(versions)
                regrade_rows += sum(h["source"] == "regrade" for h in rows)
                view = (await http.get(f"/v1/submissions/{sid}")).json()
                stored = {x["question_id"]: x["score"] for x in view["results"]}
                assert stored["q2"] == rows[-1]["new_score"]  # the last writer's score stands
                assert view["total"] == stored["q1"] + stored["q2"]
            assert sum(map(len, accepted.values())) > 0 and regrade_rows > 0  # both writers changed scores
            print(f"reviews accepted {sum(map(len, accepted.values()))}, refused {refused}, "
                  f"regrade changes {regrade_rows}")
    finally:
        for proc in procs:
            stop(proc)
