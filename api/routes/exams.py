"""Exams: create with versioned rubrics (hashes precomputed), read, and change one question's rubric."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agents.rubric import Rubric
from api.auth import AUTHOR
from api.deps import CacheDep, PoolsDep, TenantDep, TraceIdDep, x_cache
from api.errors import ProblemError
from api.schemas import ExamCreate, ExamOut, QuestionOut
from infra.stores import exams

router = APIRouter(prefix="/v1/exams", tags=["exams"])


def _not_found(exam_id: str) -> ProblemError:
    return ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found")


@router.post("", status_code=201, response_model=ExamOut, dependencies=[AUTHOR])
async def create_exam(body: ExamCreate, tenant: TenantDep, pools: PoolsDep, cache: CacheDep,
                      response: Response) -> dict:
    """Create an exam; every rubric starts at version 1 with its hash precomputed and cached."""
    exam = await exams.create_exam(pools, cache, tenant, title=body.title, questions=body.questions)
    response.headers["Location"] = f"/v1/exams/{exam['id']}"
    return exam


@router.get("/{exam_id}", response_model=ExamOut)
async def get_exam(exam_id: str, tenant: TenantDep, pools: PoolsDep, cache: CacheDep,
                   response: Response) -> dict:
    """Read an exam with its current rubrics (Redis first, PostgreSQL on a miss)."""
    exam, source = await exams.read_exam(pools, cache, tenant, exam_id)
    if exam is None:
        raise _not_found(exam_id)
    response.headers["X-Cache"] = x_cache(source)
    return exam


@router.put("/{exam_id}/questions/{question_id}/rubric", response_model=QuestionOut, dependencies=[AUTHOR])
async def put_rubric(exam_id: str, question_id: str, body: Rubric, tenant: TenantDep, pools: PoolsDep,
                     cache: CacheDep, trace_id: TraceIdDep) -> dict:
    """Replace a question's rubric with a new version (new hash, cache invalidated, ``rubric.changed``)."""
    try:
        question = await exams.update_rubric(pools, cache, tenant, exam_id, question_id, body,
                                                   trace_id=trace_id)
    except exams.QuestionRubricError as exc:
        field, sep, message = str(exc).partition(": ")
        if not sep or " " in field:
            field, message = "rubric", str(exc)
        raise ProblemError(422, "The rubric does not fit the question.", type_="validation-error",
                           errors=[{"field": field, "message": message}]) from None
    if question is None:
        raise ProblemError(404, f"No question {question_id!r} in exam {exam_id!r} for this tenant.",
                           type_="question-not-found")
    return question
