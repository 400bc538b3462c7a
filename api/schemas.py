"""Request and response bodies of the public API (pydantic v2).

Exam questions and rubrics reuse :mod:`agents.rubric` models, so the API refuses exactly what the
graders could not grade, naming the field.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from agents.rubric import Question, QuestionType, Rubric
from infra.db.values import FiniteFloat, Label, StoredText, json_text_problems

MAX_QUESTIONS = 200
"""Most questions one exam may hold."""


class ExamCreate(BaseModel):
    """``POST /v1/exams`` body."""

    model_config = ConfigDict(extra="forbid")

    title: Label = Field(min_length=1, max_length=500)
    """Exam title (one line)."""
    questions: list[Question] = Field(min_length=1, max_length=MAX_QUESTIONS)
    """Questions in order, each with its rubric; ids unique within the exam."""

    @field_validator("questions")
    @classmethod
    def _unique_ids(cls, value: list[Question]) -> list[Question]:
        ids = [q.id for q in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"question ids must be unique; repeated: {duplicates}")
        return value


class QuestionOut(BaseModel):
    """A question with its current rubric version and precomputed hash."""

    id: str
    type: QuestionType
    prompt: str
    max_points: float
    options: list[str] = Field(default_factory=list)
    """Options of a choice question (empty for other types), shown to every role."""
    rubric: Rubric | None
    """The answer key; ``null`` for a caller whose only role is ``submitter``."""
    rubric_version: int
    """Current rubric version (1 at creation, bumped by every rubric change)."""
    rubric_hash: str | None
    """sha256 of the scoring-relevant parts (:func:`agents.rubric.rubric_hash`); ``null`` with the rubric."""


class ExamOut(BaseModel):
    """An exam as returned by the API."""

    id: str
    title: str
    created_at: str
    updated_at: str
    questions: list[QuestionOut]


def _storable_answer(value: JsonValue) -> JsonValue:
    for path, problem in json_text_problems(value):
        raise ValueError(f"{path}: {problem}" if path else problem)
    return value


QuestionKey = Annotated[Label, Field(min_length=1, max_length=64)]
"""A question id as a key (``answers``, ``overrides``)."""
Answer = Annotated[JsonValue, AfterValidator(_storable_answer)]
"""An answer: any JSON whose strings are storable (the exam's question type checks the rest)."""


class SubmissionCreate(BaseModel):
    """``POST /v1/submissions`` body."""

    model_config = ConfigDict(extra="forbid")

    exam_id: uuid.UUID
    """The exam answered."""
    student_id: Label = Field(min_length=1, max_length=200)
    """The student's id in the caller's system."""
    answers: dict[QuestionKey, Answer] = Field(max_length=MAX_QUESTIONS)
    """question_id -> answer (option string or list, number, or text by question type)."""
    external_id: Label | None = Field(default=None, min_length=1, max_length=200)
    """Caller's own id; resubmitting the same (exam, student, external_id) returns the first submission."""


class SubmissionAccepted(BaseModel):
    """``202`` reply to a submission."""

    submission_id: str
    workflow_id: str
    trace_id: str
    status: str


class ResultOut(BaseModel):
    """The grade of one answer."""

    model_config = ConfigDict(extra="ignore")

    question_id: str
    score: float
    max_points: float
    confidence: float
    feedback: str = ""
    grader: str
    criteria_met: list[str] = Field(default_factory=list)
    criteria_missed: list[str] = Field(default_factory=list)
    rubric_version: int
    flagged: bool = False
    overridden: bool = False


class SubmissionOut(BaseModel):
    """A submission with its results so far."""

    model_config = ConfigDict(extra="ignore")

    id: str
    exam_id: str
    student_id: str
    external_id: str | None = None
    status: str
    total: float | None = None
    max_total: float | None = None
    workflow_id: str
    trace_id: str
    error: str | None = None
    created_at: str
    updated_at: str
    graded_at: str | None = None
    results: list[ResultOut] = Field(default_factory=list)


class ProgressOut(BaseModel):
    """Live grading progress of a submission."""

    submission_id: str
    status: str
    """Stored submission status."""
    stage: str
    percentage: float
    details: dict[str, Any] = Field(default_factory=dict)
    updated_at: str | None = None
    source: str
    """``workflow`` (live Temporal query) or ``database`` (stored status only)."""


class HealthOut(BaseModel):
    """Liveness reply."""

    status: str


class ReadyOut(BaseModel):
    """Readiness reply: ``ok``, ``degraded`` (Redis or Temporal down) or ``unavailable`` (PostgreSQL down)."""

    status: str
    checks: dict[str, str]


class ScoreOverride(BaseModel):
    """A reviewer's replacement grade for one question."""

    model_config = ConfigDict(extra="forbid")

    score: FiniteFloat = Field(ge=0)
    """New score, between 0 and the question's max_points."""
    feedback: StoredText | None = Field(default=None, max_length=10_000)
    """New feedback; omitted keeps the grader's."""


class ReviewCreate(BaseModel):
    """``POST /v1/submissions/{id}/review`` body."""

    model_config = ConfigDict(extra="forbid")

    approve: bool = True
    """``False`` rejects a submission awaiting review (status ``failed``)."""
    overrides: dict[QuestionKey, ScoreOverride] = Field(default_factory=dict, max_length=MAX_QUESTIONS)
    """question_id -> replacement grade."""
    reason: StoredText | None = Field(default=None, max_length=2_000)
    """Why, kept in the review audit log."""


class RetryCreate(BaseModel):
    """``POST /v1/submissions/{id}/retry`` body: why an operator retries a ``needs_intervention`` submission."""

    model_config = ConfigDict(extra="forbid")

    reason: StoredText = Field(min_length=1, max_length=2_000)
    """Why it is retried (kept in the audit log)."""


class RetryOut(BaseModel):
    """Answer of ``POST /v1/submissions/{id}/retry`` (202: the new run is grading)."""

    submission_id: str
    workflow_id: str
    run_id: str
    """The run the retry started."""
    previous_run_id: str | None
    """The run that gave up (``None``: the workflow had never started)."""
    resume_thread_id: str
    """Checkpoint thread the new run resumes from: questions graded before are not graded again."""


MAX_BATCH_SUBMISSIONS = 500
"""Most submissions one batch may hold (new and existing together); see ``infra.stores.batches``."""


class BatchSubmission(BaseModel):
    """One new submission of a batch (``POST /v1/exams/{id}/batches``): as ``POST /v1/submissions``."""

    model_config = ConfigDict(extra="forbid")

    student_id: Label = Field(min_length=1, max_length=200)
    """The student's id in the caller's system."""
    answers: dict[QuestionKey, Answer] = Field(max_length=MAX_QUESTIONS)
    """question_id -> answer."""
    external_id: Label | None = Field(default=None, min_length=1, max_length=200)
    """Caller's own id; repeating (exam, student, external_id) reuses the first submission."""


class BatchCreate(BaseModel):
    """``POST /v1/exams/{id}/batches`` body: new submissions, existing submission ids, or both."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"submissions": [{"student_id": "s-1", "answers": {"q1": "b"}, "external_id": "lms-1"},
                         {"student_id": "s-2", "answers": {"q1": "a"}, "external_id": "lms-2"}],
         "max_concurrent": 5}]})

    submissions: list[BatchSubmission] = Field(default_factory=list, max_length=MAX_BATCH_SUBMISSIONS)
    """New submissions, stored in one transaction with the batch (any bad answer stores nothing)."""
    submission_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_BATCH_SUBMISSIONS)
    """Existing submissions of this exam to grade (a finished grading is not run again)."""
    max_concurrent: int = Field(default=10, ge=1)
    """Child gradings at once, at most; capped by the ``GRADEFLOW_BATCH_MAX_CONCURRENT`` setting."""

    @model_validator(mode="after")
    def _size(self) -> BatchCreate:
        size = len(self.submissions) + len(self.submission_ids)
        if size > MAX_BATCH_SUBMISSIONS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_SUBMISSIONS} submissions")
        if size == 0:
            raise ValueError("give submissions or submission_ids (or both)")
        return self


class BatchAccepted(BaseModel):
    """``202`` reply to a batch."""

    batch_id: str
    workflow_id: str
    """``batch-<batch_id>``."""
    exam_id: str
    trace_id: str
    total: int
    """Submissions in the batch."""
    max_concurrent: int
    """The bound applied (the request's, capped by the setting)."""
    submission_ids: list[str]
    """The batch's submissions in order (each graded by workflow ``grade-<id>``)."""


class BatchOut(BaseModel):
    """``GET /v1/batches/{id}``: a batch's progress."""

    batch_id: str
    exam_id: str
    workflow_id: str
    total: int
    max_concurrent: int
    counts: dict[str, int]
    """Submissions per status (``source`` temporal: the batch's children, with ``running``/``pending``)."""
    done: int
    """Submissions graded (or given up)."""
    percentage: float
    """0..100."""
    source: str
    """``temporal`` (the running batch workflow's query) or ``database`` (the submissions' statuses)."""
    created_at: str
    kind: str = "grade"
    """``grade`` or ``regrade``."""


class RegradeCreate(BaseModel):
    """``POST /v1/exams/{id}/regrade`` body: which finished submissions to grade again with the current rubric."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"scope": "before_version", "rubric_version": 3, "max_concurrent": 5},
        {"scope": "ids", "submission_ids": ["123e4567-e89b-12d3-a456-426614174000"], "override_reviewed": True}]})

    scope: Literal["all", "flagged", "before_version", "ids"]
    """``all`` finished submissions; ``flagged`` (a result was flagged or set by a reviewer); ``before_version``
    (a result graded with a rubric version below ``rubric_version``); ``ids`` (``submission_ids``)."""
    rubric_version: int | None = Field(default=None, ge=1)
    """With ``before_version``: regrade results graded with an older rubric version than this."""
    submission_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_BATCH_SUBMISSIONS)
    """With ``ids``: the submissions (finished ones of this exam)."""
    override_reviewed: bool = False
    """``true``: a score a reviewer set is replaced too; ``false``: it is kept."""
    max_concurrent: int = Field(default=10, ge=1)
    """Gradings at once, at most; capped by ``GRADEFLOW_BATCH_MAX_CONCURRENT``."""

    @model_validator(mode="after")
    def _scope_fields(self) -> RegradeCreate:
        if self.scope == "before_version" and self.rubric_version is None:
            raise ValueError("scope before_version needs rubric_version")
        if self.scope == "ids" and not self.submission_ids:
            raise ValueError("scope ids needs submission_ids")
        if self.scope != "ids" and self.submission_ids:
            raise ValueError("submission_ids go with scope ids only")
        return self
