"""Shared helpers for the grading workflow/activity tests: seeding and in-process workers."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from activities.agent import AgentActivities, GradeHook
from activities.batch import BatchActivities
from activities.grading import GradingActivities
from agents.checkpointer import open_saver
from agents.graders import grade_with_rubric
from agents.rubric import Question, rubric_hash
from infra.settings import Settings
from worker import workflow_runner
from workflows.batch import BatchGradingWorkflow
from workflows.grading import GradingInput, GradingWorkflow

INSERT_TENANT_SQL = "INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, %s)"
INSERT_QUESTION_SQL = """
INSERT INTO questions (exam_id, question_id, tenant_id, position, type, prompt, max_points)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
INSERT_RUBRIC_SQL = """
INSERT INTO rubric_versions (exam_id, question_id, version, tenant_id, rubric, rubric_hash)
VALUES (%s, %s, 1, %s, %s, %s)
"""
INSERT_SUBMISSION_SQL = """
INSERT INTO submissions (id, tenant_id, exam_id, student_id, status, workflow_id, trace_id)
VALUES (%s, %s, %s, %s, 'queued', %s, %s)
"""
INSERT_ANSWER_SQL = "INSERT INTO answers (submission_id, question_id, tenant_id, answer) VALUES (%s, %s, %s, %s)"


def choice(qid: str, correct: str = "a", points: float = 2.0) -> Question:
    return Question(id=qid, type="choice", prompt="Pick", max_points=points,
                    rubric={"options": ["a", "b", "c"], "correct": [correct]})


def numeric(qid: str, value: float = 2.0, points: float = 3.0) -> Question:
    return Question(id=qid, type="numeric", prompt="Compute", max_points=points,
                    rubric={"value": value, "abs_tol": 0.1})


def text(qid: str) -> Question:
    return Question(id=qid, type="short_answer", prompt="Explain photosynthesis", max_points=4.0, rubric={
        "criteria": [
            {"id": "process", "description": "process", "points": 2, "keywords": ["photosynthesis"]},
            {"id": "output", "description": "output", "points": 2, "keywords": ["glucose"]},
        ],
    })


@st.composite
def exams(draw, min_questions: int = 1, max_questions: int = 4) -> tuple[list[Question], dict[str, Any]]:
    """A generated exam of choice/numeric questions and a submission's answers (some unanswered)."""
    n = draw(st.integers(min_questions, max_questions))
    questions, answers = [], {}
    for i in range(n):
        qid = f"q{i}"
        if draw(st.booleans()):
            questions.append(choice(qid, draw(st.sampled_from("abc"))))
            answer = draw(st.none() | st.sampled_from("abc"))
        else:
            questions.append(numeric(qid, draw(st.integers(-5, 5))))
            answer = draw(st.none() | st.integers(-5, 5))
        if answer is not None:
            answers[qid] = answer
    return questions, answers


def expected_total(questions: Sequence[Question], answers: dict[str, Any]) -> float:
    """What an undisturbed grading awards: the rubric engines applied to each answer."""
    return sum(grade_with_rubric(q, answers.get(q.id)).score for q in questions)


@dataclass
class Seeded:
    """A seeded exam + submission."""

    tenant_id: str
    exam_id: str
    submission_id: str
    trace_id: str

    def grading_input(self, cognitive_queue: str, **kw: Any) -> GradingInput:
        return GradingInput(self.submission_id, self.tenant_id, self.exam_id, self.trace_id,
                            cognitive_queue=cognitive_queue, **kw)


async def seed_exam(pools: Any, tenant_id: str, questions: Sequence[Question]) -> str:
    exam_id = str(uuid.uuid4())
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_TENANT_SQL, (tenant_id, tenant_id))
        await conn.execute(INSERT_EXAM_SQL, (exam_id, tenant_id, "exam"))
        for pos, q in enumerate(questions):
            await conn.execute(INSERT_QUESTION_SQL, (exam_id, q.id, tenant_id, pos, q.type.value, q.prompt,
                                                     q.max_points))
            await conn.execute(INSERT_RUBRIC_SQL, (exam_id, q.id, tenant_id,
                                                   json.dumps(q.rubric.model_dump(mode="json")), rubric_hash(q)))
    return exam_id


async def seed_submission(pools: Any, tenant_id: str, exam_id: str, answers: dict[str, Any]) -> Seeded:
    sid, trace = str(uuid.uuid4()), uuid.uuid4().hex
    async with pools.transaction(tenant_id) as conn:
        await conn.execute(INSERT_SUBMISSION_SQL, (sid, tenant_id, exam_id, "student-1", f"grade-{sid}", trace))
        for qid, answer in answers.items():
            await conn.execute(INSERT_ANSWER_SQL, (sid, qid, tenant_id, json.dumps(answer)))
    return Seeded(tenant_id, exam_id, sid, trace)


async def seed(pools: Any, tenant_id: str, questions: Sequence[Question], answers: dict[str, Any]) -> Seeded:
    exam_id = await seed_exam(pools, tenant_id, questions)
    return await seed_submission(pools, tenant_id, exam_id, answers)


async def fetch_one(pools: Any, tenant_id: str, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()


async def fetch_all(pools: Any, tenant_id: str, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def submission(pools: Any, s: Seeded) -> dict[str, Any]:
    row = await fetch_one(pools, s.tenant_id, "SELECT status, total, max_total, error FROM submissions WHERE id=%s",
                          (s.submission_id,))
    assert row is not None
    return row


async def grader_calls(pools: Any, s: Seeded) -> dict[str, int]:
    rows = await fetch_all(pools, s.tenant_id, "SELECT question_id, count(*) AS n FROM grader_calls "
                           "WHERE submission_id=%s GROUP BY question_id", (s.submission_id,))
    return {r["question_id"]: int(r["n"]) for r in rows}


@asynccontextmanager
async def grading_workers(client: Client, pools: Any, saver: Any, settings: Any, task_queue: str, *,
                          grade_hook: GradeHook | None = None, model: Any = None,
                          agent_interceptors: Sequence[Interceptor] = (),
                          cognitive: bool = True) -> AsyncIterator[str]:
    """Run an orchestration worker on ``task_queue`` and a cognitive one on ``<task_queue>-cog``."""
    cog = f"{task_queue}-cog"
    grading = GradingActivities(pools, settings)
    orch = Worker(client, task_queue=task_queue, workflows=[GradingWorkflow, BatchGradingWorkflow],
                  workflow_runner=workflow_runner(),
                  activities=[grading.load_grading_context, grading.persist_grading_result,
                              grading.set_status, grading.mark_needs_intervention,
                              BatchActivities(pools).publish_batch_progress])
    async with orch:
        if not cognitive:
            yield cog
            return
        agent = AgentActivities(pools, saver, settings, model, grade_hook=grade_hook)
        async with Worker(client, task_queue=cog, activities=[agent.run_grading_agent],
                          interceptors=list(agent_interceptors)):
            yield cog


POOL_KWARGS = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


@pytest.fixture
async def saver(pg_url: str) -> AsyncIterator[Any]:
    """A GradeflowSaver on its own small autocommit pool (app role)."""
    pool = AsyncConnectionPool(pg_url, min_size=1, max_size=4, kwargs=POOL_KWARGS, open=False)
    await pool.open()
    try:
        async with open_saver(pool) as s:
            yield s
    finally:
        await pool.close()


@pytest.fixture
def gf_settings(services: Any) -> Settings:
    """Settings pointing at the session's services (no environment patching)."""
    return Settings(database_url=services.app_url, redis_url=services.redis_url,
                    temporal_address=services.temporal_address, env="test")
