"""Request and response bodies of the operators' admin API (``/v1/admin/...``): dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DeadLetterKind = Literal["outbox", "external_event", "submission", "webhook"]
DeadLetterStatus = Literal["open", "replayed", "discarded", "resolved"]


class DeadLetterActionCreate(BaseModel):
    """``POST /v1/admin/dlq/{id}/replay|discard`` body: why (kept in the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2_000)
    """Why the operator replays or discards it."""

    @field_validator("reason")
    @classmethod
    def _storable(cls, value: str) -> str:
        if not value.strip() or "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise ValueError("reason must be text with something other than blanks (no NUL)")
        return value


class DeadLetterActionOut(BaseModel):
    """One audited action on a dead letter."""

    action: str
    """``replay``, ``discard`` or ``resolve`` (it succeeded later by itself)."""
    actor: str
    """Who: the operator's token subject, or ``system``."""
    reason: str | None
    detail: dict[str, Any] = Field(default_factory=dict)
    """What the action did: the grading run a replay started, the stream entry it added, ..."""
    created_at: datetime


class DeadLetterOut(BaseModel):
    """A dead letter: something that gave up after its retries."""

    id: int
    kind: DeadLetterKind
    """What gave up: an ``outbox`` event, an ``external_event``, a ``submission`` needing intervention."""
    event_type: str | None
    """What it was doing (event type; ``grading`` for a submission)."""
    reference_id: str
    """The event id, or the submission id."""
    status: DeadLetterStatus
    attempts: int
    first_error: str | None
    last_error: str
    payload: dict[str, Any]
    first_failed_at: datetime
    last_failed_at: datetime
    updated_at: datetime
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_reason: str | None
    blocking: int
    """Later events of the same aggregate it holds back (outbox only)."""
    actions: list[DeadLetterActionOut] | None = None
    """Audit trail (on ``GET /v1/admin/dlq/{id}`` and after an action; omitted in lists)."""


class DeadLetterPage(BaseModel):
    """One page of dead letters, oldest first."""

    items: list[DeadLetterOut]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; ``null`` on the last one."""
