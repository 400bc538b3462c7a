"""Who reads what, through the real API: roles, answer keys, other callers' submissions, token claims.

- a token whose roles are all unknown may do nothing (403), whatever it asks;
- a submitter (an LMS integration) reads the submissions it created and exams without answer keys;
- reviewers and admins read everything in their tenant;
- claims that could not be stored (``sub`` with NUL, control characters, lone surrogates) are a 401.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.integration.api.conftest import GOOD_ANSWERS, exam_body

PROBLEM = "application/problem+json"


def forged(settings: Any, **claims: Any) -> dict[str, str]:
    """Headers with a correctly signed token carrying exactly ``claims`` (defaults for the rest)."""
    body = {"sub": "caller", "tenant": "t-x", "roles": ["admin"], "iat": int(time.time()),
            "exp": int(time.time()) + 600, **claims}
    return {"Authorization": f"Bearer {jwt.encode(body, settings.jwt_secret, algorithm='HS256')}"}


def submitter(settings: Any, tenant_id: str, sub: str) -> dict[str, str]:
    """Headers of a caller whose only role is ``submitter``."""
    from infra.security.tokens import mint_token

    return {"Authorization": f"Bearer {mint_token(settings, tenant=tenant_id, roles=['submitter'], sub=sub)}"}


@pytest.fixture
async def world(client, app_settings, auth_headers, tenant_id, temporal_client) -> dict[str, Any]:
    """An exam and three submissions of one tenant: two submitters' and an admin's."""
    admin = auth_headers(tenant_id)
    exam_id = (await client.post("/v1/exams", json=exam_body(), headers=admin)).json()["id"]
    out: dict[str, Any] = {"exam_id": exam_id}
    for who in ("lms-a", "lms-b", "admin"):
        hdrs = admin if who == "admin" else submitter(app_settings, tenant_id, who)
        resp = await client.post("/v1/submissions", headers=hdrs,
                                 json={"exam_id": exam_id, "student_id": f"s-{who}", "answers": GOOD_ANSWERS})
        assert resp.status_code == 202, resp.text
        out[who] = resp.json()["submission_id"]
        await temporal_client.get_workflow_handle(resp.json()["workflow_id"]).terminate("not graded here")
    return out


@pytest.mark.parametrize("roles", [[], ["ADMIN"], ["admin "], ["root", "Reviewer"], ["submitter\x00"]])
async def test_a_token_with_only_unknown_roles_may_do_nothing(client, app_settings, tenant_id, world,
                                                               roles) -> None:
    headers = forged(app_settings, tenant=tenant_id, roles=roles)
    exam, sub = world["exam_id"], world["lms-a"]
    calls = [("GET", f"/v1/exams/{exam}", None), ("GET", "/v1/exams", None), ("GET", "/v1/submissions", None),
             ("GET", f"/v1/submissions/{sub}", None), ("GET", f"/v1/submissions/{sub}/progress", None),
             ("POST", "/v1/submissions", {"exam_id": exam, "student_id": "x", "answers": {}}),
             ("POST", "/v1/exams", exam_body()),
             ("PUT", f"/v1/exams/{exam}/questions/q1/rubric", {"options": ["a"], "correct": ["a"]}),
             ("POST", f"/v1/submissions/{sub}/review", {}), ("POST", f"/v1/submissions/{sub}/retry", {"reason": "x"})]
    for method, path, body in calls:
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)
        assert "correct" not in resp.text and "criteria" not in resp.text
    mixed = forged(app_settings, tenant=tenant_id, roles=[*roles, "reviewer"])
    assert (await client.get(f"/v1/exams/{exam}", headers=mixed)).status_code == 200  # known roles still count


async def test_a_submitter_reads_its_own_submissions_and_no_answer_key(client, app_settings, tenant_id,
                                                                       world) -> None:
    lms_a = submitter(app_settings, tenant_id, "lms-a")
    own, other, admins = world["lms-a"], world["lms-b"], world["admin"]
    assert (await client.get(f"/v1/submissions/{own}", headers=lms_a)).json()["student_id"] == "s-lms-a"
    assert (await client.get(f"/v1/submissions/{own.upper()}/progress", headers=lms_a)).status_code == 200
    for sid in (other, admins):  # another caller's submission looks exactly like a missing one
        for path in (f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/progress"):
            resp = await client.get(path, headers=lms_a)
            assert resp.status_code == 404 and resp.json()["type"].endswith("submission-not-found"), path
    listed = await client.get("/v1/submissions", params={"fields": "id,student_id"}, headers=lms_a)
    assert [i["id"] for i in listed.json()["items"]] == [own]
    by_exam = await client.get("/v1/submissions", params={"exam_id": world["exam_id"]}, headers=lms_a)
    assert [i["id"] for i in by_exam.json()["items"]] == [own]

    exam = await client.get(f"/v1/exams/{world['exam_id']}", headers=lms_a)
    assert exam.status_code == 200
    questions = {q["id"]: q for q in exam.json()["questions"]}
    assert all(q["rubric"] is None and q["rubric_hash"] is None for q in questions.values())
    assert questions["q1"]["options"] == ["a", "b", "c"] and questions["q2"]["options"] == []
    assert "correct" not in exam.text and "photosynthesis" not in exam.text.replace("Prompt", "")
    listed_exams = await client.get("/v1/exams", headers=lms_a)
    assert [e["id"] for e in listed_exams.json()["items"]] == [world["exam_id"]]
    put = await client.put(f"/v1/exams/{world['exam_id']}/questions/q1/rubric", headers=lms_a,
                           json={"options": ["a", "b", "c"], "correct": ["a"]})
    assert put.status_code == 403


@pytest.mark.parametrize("roles", [("reviewer",), ("admin",), ("submitter", "reviewer")])
async def test_reviewers_and_admins_read_everything_in_their_tenant(client, auth_headers, tenant_id, world,
                                                                   roles) -> None:
    headers = auth_headers(tenant_id, roles=roles)
    for who in ("lms-a", "lms-b", "admin"):
        assert (await client.get(f"/v1/submissions/{world[who]}", headers=headers)).status_code == 200
    listed = await client.get("/v1/submissions", headers=headers)
    assert sorted(i["id"] for i in listed.json()["items"]) == sorted(world[w] for w in ("lms-a", "lms-b", "admin"))
    exam = (await client.get(f"/v1/exams/{world['exam_id']}", headers=headers)).json()
    q1 = next(q for q in exam["questions"] if q["id"] == "q1")
    assert q1["rubric"]["correct"] == ["b"] and q1["rubric_hash"] and q1["options"] == ["a", "b", "c"]


@pytest.mark.parametrize("claims", [
    {"sub": ""}, {"sub": "   "}, {"sub": "rev\x00iewer"}, {"sub": "rev\udc00"}, {"sub": "a\nb"}, {"sub": "\x1b[31m"},
    {"sub": "x" * 257}, {"sub": 42}, {"sub": ["a"]}, {"tenant": ""}, {"tenant": "t\x00"}, {"tenant": "demo school"},
    {"roles": "admin"}, {"roles": [1]},
])
async def test_claims_that_cannot_be_stored_are_a_401(client, app_settings, tenant_id, world, claims) -> None:
    headers = forged(app_settings, **{"tenant": tenant_id, **claims})
    for method, path, body in [("GET", f"/v1/submissions/{world['admin']}", None),
                               ("POST", "/v1/submissions", {"exam_id": world["exam_id"], "student_id": "s",
                                                            "answers": {}}),
                               ("POST", f"/v1/submissions/{world['admin']}/review", {})]:
        resp = await client.request(method, path, json=body, headers={**headers, "Idempotency-Key": "k-1"})
        assert resp.status_code == 401, (claims, path, resp.text)
        assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_printable_unicode_subjects_are_fine(client, app_settings, tenant_id, world) -> None:
    headers = forged(app_settings, tenant=tenant_id, sub="lms · école 🎓", roles=["submitter"])
    resp = await client.post("/v1/submissions", headers=headers,
                             json={"exam_id": world["exam_id"], "student_id": f"s-{uuid.uuid4().hex[:6]}",
                                   "answers": {"q1": "b"}})
    assert resp.status_code == 202, resp.text
    assert (await client.get(f"/v1/submissions/{resp.json()['submission_id']}", headers=headers)).status_code == 200


async def _ws(url: str) -> dict | int:
    """The first message of a feed, or the close code it was refused with."""
    try:
        async with websockets.connect(url, open_timeout=10) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else 1006


async def test_live_feeds_follow_the_same_rules(api_url, app_settings, auth_headers, tenant_id, world) -> None:
    base = api_url.replace("http://", "ws://") + "/v1/ws"

    def token(headers: dict[str, str]) -> str:
        return headers["Authorization"].split()[1]

    lms_a = token(submitter(app_settings, tenant_id, "lms-a"))
    own, other, exam = world["lms-a"], world["lms-b"], world["exam_id"]
    snapshot = await _ws(f"{base}/submissions/{own.upper()}?token={lms_a}")
    assert isinstance(snapshot, dict) and snapshot["submission_id"] == own and snapshot["payload"]["id"] == own
    assert await _ws(f"{base}/submissions/{other}?token={lms_a}") == 4404  # like a missing one
    assert await _ws(f"{base}/exams/{exam}?token={lms_a}") == 4403  # answer keys and everyone's grades
    no_role = token(forged(app_settings, tenant=tenant_id, roles=["ADMIN"]))
    assert await _ws(f"{base}/submissions/{own}?token={no_role}") == 4403
    reviewer = token(auth_headers(tenant_id, roles=("reviewer",)))
    exam_feed = await _ws(f"{base}/exams/{exam.upper()}?token={reviewer}")
    assert isinstance(exam_feed, dict) and exam_feed["payload"]["exam"]["id"] == exam
    assert isinstance(await _ws(f"{base}/submissions/{other}?token={reviewer}"), dict)
