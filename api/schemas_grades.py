"""Request and response bodies of score history and regrade requests.

Routes: ``/v1/submissions/{id}/history``, ``/v1/submissions/{id}/regrade-requests``, ``/v1/regrade-requests``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from infra.db.values import FiniteFloat, Label, StoredText

RequestStatus = Literal["open", "accepted", "rejected"]
QuestionKey = Annotated[Label, Field(min_length=1, max_length=64)]

EXAMPLE_SUBMISSION = "123e4567-e89b-12d3-a456-426614174000"
EXAMPLE_REQUEST: dict[str, JsonValue] = {
    "id": "9b2f6c1e-1c7b-4d7a-9d59-0f6f6b1c2a10", "submission_id": EXAMPLE_SUBMISSION, "question_id": "q2",
    "reason": "My answer 41.8 is within the stated tolerance.", "requested_by": "lms-canvas", "status": "open",
    "resolved_by": None, "resolution_reason": None, "old_score": None, "new_score": None, "saga_id": None,
    "created_at": "2026-11-29T22:40:00+00:00", "resolved_at": None}


class HistoryEntry(BaseModel):
    """One change of one question's score."""

    id: int
    """Position in the submission's history (increasing)."""
    question_id: str
    old_score: float | None
    """Score before the change (``null``: the question's first grade)."""
    new_score: float
    source: Literal["agent", "review", "regrade", "request"]
    """``agent`` (first grade), ``regrade`` (graded again), ``review`` (a reviewer's score, or the compensation
    of one), ``request`` (an accepted regrade request)."""
    actor_id: str | None
    """Who: ``agent`` for gradings, the reviewer's token subject otherwise."""
    reason: str | None
    rubric_version: int | None
    """Rubric version a grading used (``null`` for a reviewer's score)."""
    submission_version: int
    """The submission's row version the change committed."""
    trace_id: str | None
    created_at: str


class HistoryPage(BaseModel):
    """``GET /v1/submissions/{id}/history``: changes oldest first, one page at a time."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "submission_id": EXAMPLE_SUBMISSION, "next_cursor": None, "items": [
            {"id": 11, "question_id": "q2", "old_score": None, "new_score": 0.0, "source": "agent",
             "actor_id": "agent", "reason": None, "rubric_version": 1, "submission_version": 3,
             "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "created_at": "2026-11-29T22:30:00+00:00"},
            {"id": 12, "question_id": "q2", "old_score": 0.0, "new_score": 2.0, "source": "request",
             "actor_id": "teacher-7", "reason": "within tolerance", "rubric_version": None,
             "submission_version": 4, "trace_id": "0af7651916cd43dd8448eb211c80319c",
             "created_at": "2026-11-29T22:41:00+00:00"}]}]})

    submission_id: str
    items: list[HistoryEntry]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last one."""


class RegradeRequestCreate(BaseModel):
    """``POST /v1/submissions/{id}/regrade-requests`` body: which question, and why."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"question_id": "q2", "reason": "My answer 41.8 is within the stated tolerance."}]})

    question_id: QuestionKey
    """A question of the submission that has a grade."""
    reason: StoredText = Field(min_length=1, max_length=2_000)
    """Why the grade should change (shown to reviewers, kept in the audit log)."""


class RegradeRequestOut(BaseModel):
    """A regrade request."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    id: str
    submission_id: str
    question_id: str
    reason: str
    requested_by: str
    """The submitter (token subject) who asked."""
    status: RequestStatus
    resolved_by: str | None
    resolution_reason: str | None
    old_score: float | None
    """Accepted: the score before."""
    new_score: float | None
    """Accepted: the score the reviewer set."""
    saga_id: str | None
    """Accepted: the review saga that applied the score."""
    created_at: str
    resolved_at: str | None


class RegradeRequestPage(BaseModel):
    """``GET /v1/regrade-requests``: requests in one status, oldest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [EXAMPLE_REQUEST], "next_cursor": None}]})

    items: list[RegradeRequestOut]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last one."""


class RegradeRequestAccept(BaseModel):
    """``POST /v1/regrade-requests/{id}/accept`` body: the new score (through the review saga)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"score": 2.0, "reason": "Within tolerance; full marks.", "feedback": "Accepted on review."}]})

    score: FiniteFloat = Field(ge=0)
    """New score of the question, between 0 and its max_points."""
    feedback: StoredText | None = Field(default=None, max_length=10_000)
    """New feedback; omitted keeps the grader's."""
    reason: StoredText | None = Field(default=None, max_length=2_000)
    """Why (kept in the audit log and the score history)."""


class RegradeRequestReject(BaseModel):
    """``POST /v1/regrade-requests/{id}/reject`` body: the reason is required."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"reason": "The rubric requires the unit; the answer has none."}]})

    reason: StoredText = Field(min_length=1, max_length=2_000)
    """Why the grade stands (shown to the submitter, kept in the audit log)."""
