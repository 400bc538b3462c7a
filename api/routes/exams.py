"""Exams: create with versioned rubrics (hashes precomputed), read, and change one question's rubric.

Answer keys are for reviewers and admins: a caller whose only role is ``submitter`` reads an exam's
questions (prompt, type, points, the options of a choice question) with ``rubric`` and
``rubric_hash`` left out (a hash of a choice rubric would give its correct options away).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from agents.rubric import QuestionType, Rubric
from api.auth import AUTHOR, PrincipalDep, reads_everything
from api.deps import CacheDep, ExamId, PoolsDep, QuestionId, TenantDep, TraceIdDep, x_cache
from api.errors import ProblemError
from api.schemas import ExamCreate, ExamOut, QuestionOut
from infra.stores import exams

router = APIRouter(prefix="/v1/exams", tags=["exams"])


def _not_found(exam_id: str) -> ProblemError:
    return ProblemError(404, f"No exam {exam_id!r} for this tenant.", type_="exam-not-found")


def question_view(question: dict[str, Any], *, answer_key: bool) -> dict[str, Any]:
    """A stored question as shown to a caller: its choice options always, its rubric only with ``answer_key``."""
    rubric = question.get("rubric") or {}
    options = list(rubric.get("options") or []) if question.get("type") == QuestionType.CHOICE else []
    shown = {**question, "options": options}
    if not answer_key:
        shown.update(rubric=None, rubric_hash=None)
    return shown


def exam_view(exam: dict[str, Any], *, answer_key: bool) -> dict[str, Any]:
    """An exam as shown to a caller (see :func:`question_view`)."""
    return {**exam, "questions": [question_view(q, answer_key=answer_key) for q in exam["questions"]]}


@router.post("", status_code=201, response_model=ExamOut, dependencies=[AUTHOR])
async def create_exam(body: ExamCreate, tenant: TenantDep, pools: PoolsDep, cache: CacheDep,
                      response: Response) -> dict:
    """Create an exam; every rubric starts at version 1 with its hash precomputed and cached."""
    exam = await exams.create_exam(pools, cache, tenant, title=body.title, questions=body.questions)
    response.headers["Location"] = f"/v1/exams/{exam['id']}"
    return exam_view(exam, answer_key=True)


@router.get("/{exam_id}", response_model=ExamOut)
async def get_exam(exam_id: ExamId, principal: PrincipalDep, tenant: TenantDep, pools: PoolsDep, cache: CacheDep,
                   response: Response) -> dict:
    """Read an exam with its current rubrics (Redis first, PostgreSQL on a miss).

    Rubrics are answer keys: a caller whose only role is ``submitter`` gets them as ``null``.
    """
    exam, source = await exams.read_exam(pools, cache, tenant, exam_id)
    if exam is None:
        raise _not_found(exam_id)
    response.headers["X-Cache"] = x_cache(source)
    return exam_view(exam, answer_key=reads_everything(principal))


@router.put("/{exam_id}/questions/{question_id}/rubric", response_model=QuestionOut, dependencies=[AUTHOR])
async def put_rubric(exam_id: ExamId, question_id: QuestionId, body: Rubric, tenant: TenantDep, pools: PoolsDep,
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
    return question_view(question, answer_key=True)
