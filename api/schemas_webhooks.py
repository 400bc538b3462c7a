"""Request and response bodies of ``/v1/webhooks``: endpoints, their one-time secrets, their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infra.constants import EventType
from infra.db.values import Label

EVENT_TYPES = frozenset(e.value for e in EventType) | {"*"}
"""What an endpoint may subscribe to: an event type, or ``*`` for every event."""
DeliveryStatus = Literal["pending", "delivered", "failed"]
EXAMPLE_ID = "0b9d7c3e-2f1a-4c5d-8e6f-7a8b9c0d1e2f"
EXAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3zPOMhuEXzY="


class WebhookCreate(BaseModel):
    """``POST /v1/webhooks`` body: where to send which events."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://lms.example.edu/hooks/gradeflow",
         "event_types": ["submission.graded", "submission.reviewed"], "description": "LMS gradebook sync"}]})

    url: str = Field(min_length=1, max_length=2048)
    """Receiver URL. In prod: ``https``, and its host must resolve to public addresses only."""
    event_types: list[str] = Field(min_length=1, max_length=32)
    """Event types to send (e.g. ``submission.graded``); ``*`` for every event."""
    description: Label | None = Field(default=None, max_length=200)
    """A note for the people who manage it."""

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type {unknown[0]!r}; one of: {', '.join(sorted(EVENT_TYPES))}")
        return sorted(set(value))


class WebhookOut(BaseModel):
    """A webhook endpoint (its secret is shown only when created or rotated)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": EXAMPLE_ID, "url": "https://lms.example.edu/hooks/gradeflow", "event_types": ["submission.graded"],
         "description": "LMS gradebook sync", "status": "active", "disabled_reason": None, "disabled_at": None,
         "failing_since": None, "previous_secret_expires_at": None, "created_by": "ops-alice",
         "created_at": "2026-11-29T22:00:00Z", "updated_at": "2026-11-29T22:00:00Z"}]})

    id: str
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["active", "disabled"]
    """``disabled`` after failing for the disable window (``POST .../enable`` turns it back on)."""
    disabled_reason: str | None
    """Why it was disabled."""
    disabled_at: datetime | None
    failing_since: datetime | None
    """First failed delivery since the last successful one (``null``: not failing)."""
    previous_secret_expires_at: datetime | None
    """Until when the secret before the last rotation still signs (beside the current one)."""
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    """The endpoint with its signing secret: the only time the secret is shown."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": EXAMPLE_ID, "url": "https://lms.example.edu/hooks/gradeflow", "event_types": ["submission.graded"],
         "description": None, "status": "active", "disabled_reason": None, "disabled_at": None,
         "failing_since": None, "previous_secret_expires_at": None, "created_by": "ops-alice",
         "created_at": "2026-11-29T22:00:00Z", "updated_at": "2026-11-29T22:00:00Z", "secret": EXAMPLE_SECRET}]})

    secret: str
    """``whsec_...``: verify each request's ``webhook-signature`` with it (Standard Webhooks). Store it now."""


class WebhookList(BaseModel):
    """The tenant's endpoints, oldest first."""

    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    """One delivery of one event to the endpoint."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 17, "event_id": "5d3c1b2a-9f8e-4d7c-b6a5-4e3f2a1b0c9d", "event_type": "submission.graded",
         "status": "pending", "attempts": 2, "last_status_code": 503, "last_error": "HTTP 503: busy",
         "next_attempt_at": "2026-11-29T22:05:00Z", "last_attempt_at": "2026-11-29T22:00:05Z",
         "delivered_at": None, "created_at": "2026-11-29T22:00:00Z"}]})

    id: int
    event_id: str
    """The ``webhook-id`` header of every attempt."""
    event_type: str
    status: DeliveryStatus
    """``pending`` (retrying), ``delivered`` (a 2xx answer) or ``failed`` (gave up: a ``webhook`` dead letter)."""
    attempts: int
    last_status_code: int | None
    """HTTP status of the last attempt (``null``: no answer)."""
    last_error: str | None
    next_attempt_at: datetime | None
    """When it is sent next (pending only)."""
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryPage(BaseModel):
    """One page of deliveries, newest first."""

    items: list[DeliveryOut]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; ``null`` on the last one."""
