"""The API's grade changes hold ``lock:submission:{id}``: while another writer holds it, a review is a 409.

Real API server (its lock wait shortened by the setting), PostgreSQL and Redis; the other writer is a
:class:`RedisLock` on the submission's lock held by the test, as a grading worker would hold it.
"""

from __future__ import annotations

import httpx
import psycopg

from infra.cache.keys import submission_lock_name
from infra.security.tokens import mint_token
from infra.stores.locks import RedisLock
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body
from tests.integration.api.server import serve_app
from tests.integration.api.test_api_review import MAX_POINTS, complete_submission

HISTORY_SQL = "SELECT source, new_score FROM score_history WHERE submission_id = %s AND source <> 'agent' ORDER BY id"


async def test_a_held_submission_lock_makes_review_and_accept_409(app_settings, temporal_client, task_queue, pools,
                                                                 tenant_id, pg_admin_url):
    settings = app_settings.model_copy(update={"submission_lock_wait": 0.3})
    reviewer = {"Authorization": f"Bearer {mint_token(settings, tenant=tenant_id, roles=['reviewer'], sub='t1')}"}
    lms = {"Authorization": f"Bearer {mint_token(settings, tenant=tenant_id, roles=['submitter'], sub='lms')}"}
    async with serve_app(settings, temporal_client, task_queue) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as client:
        exam = await client.post("/v1/exams", json=exam_body(), headers=reviewer)
        sub = await client.post("/v1/submissions", json={"exam_id": exam.json()["id"], "student_id": "s1",
                                                         "answers": GOOD_ANSWERS}, headers=lms)
        sid = sub.json()["submission_id"]
        await temporal_client.get_workflow_handle(f"grade-{sid}").terminate("graded by the test")
        await complete_submission(pools, tenant_id, sid, {q: (1.0, m) for q, m in MAX_POINTS.items()})
        request = (await client.post(f"/v1/submissions/{sid}/regrade-requests",
                                     json={"question_id": "q2", "reason": "r"}, headers=lms)).json()

        holder = RedisLock(pools.redis, submission_lock_name(sid), ttl=30, owner="grading-worker")
        assert await holder.acquire()
        try:
            busy = await client.post(f"/v1/submissions/{sid}/review", json={"overrides": {"q2": {"score": 2}}},
                                     headers=reviewer)
            assert busy.status_code == 409, busy.text
            accept = await client.post(f"/v1/regrade-requests/{request['id']}/accept", json={"score": 2},
                                       headers=reviewer)
            assert accept.status_code == 409, accept.text
            assert await holder.owned()
        finally:
            await holder.release()
        still_open = await client.get(f"/v1/regrade-requests/{request['id']}", headers=reviewer)
        assert still_open.json()["status"] == "open"
        async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
            assert await (await conn.execute(HISTORY_SQL, (sid,))).fetchall() == []

        done = await client.post(f"/v1/regrade-requests/{request['id']}/accept", json={"score": 2}, headers=reviewer)
        assert done.status_code == 200 and done.json()["status"] == "accepted"
        async with await psycopg.AsyncConnection.connect(pg_admin_url) as conn:
            assert await (await conn.execute(HISTORY_SQL, (sid,))).fetchall() == [("request", 2)]
