"""Inputs, outputs and messages of :class:`workflows.grading.GradingWorkflow` (stdlib only).

Kept apart from the workflow module so that starting a grading (the API, the relay's reconciler,
operators' retries) imports only these dataclasses, not the agent stack, and so that the workers'
sandbox passes them through instead of re-running their definitions for every workflow run.
New fields only with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.constants import COGNITIVE_QUEUE


@dataclass
class GradingInput:
    """Input of :class:`GradingWorkflow`."""

    submission_id: str
    tenant_id: str
    exam_id: str
    trace_id: str
    heartbeat_timeout_s: float = 30
    """Heartbeat timeout of the agent activity."""
    agent_timeout_s: float = 900
    """Start-to-close timeout of one agent attempt."""
    review_deadline_s: float = 604800
    """How long a flagged submission waits for a reviewer."""
    cognitive_queue: str = COGNITIVE_QUEUE
    """Task queue of the agent activity."""
    agent_max_attempts: int = 3
    """Agent runs spent on real grading errors before intervention (crashes and outages never count)."""
    agent_max_concurrency: int | None = None
    """Questions finished at once (see ``AgentInput.max_concurrency``); ``None``: no limit."""
    low_confidence_threshold: float | None = None
    """Override of the configured review threshold."""
    outage_retry_timeout_s: float = 6 * 3600
    """How long each activity keeps retrying through an outage (schedule-to-close), seconds."""
    retry_max_interval_s: float = 30
    """Longest wait between two retries of an activity, seconds."""
    resume_thread_id: str = ""
    """Checkpoint thread of an earlier run to resume from (an operator's retry); empty: this run's."""
    keep_reviewed: bool = False
    """A regrade keeping reviewers' scores (questions a reviewer overrode keep their stored row)."""
    student_id: str = ""
    """The submission's student (search attribute ``GradeflowStudent`` and the static summary); empty: unknown."""
    exam_title: str = ""
    """The exam's title, for the static summary the Temporal Web UI shows; empty: the exam id is shown."""


@dataclass
class BatchInput:
    """Input of :class:`BatchGradingWorkflow`."""

    submissions: list[GradingInput]
    """One grading per submission (child workflow id ``grade-<submission_id>``)."""
    max_concurrent: int = 10
    """Children running at once, at most."""
    regrade: bool = False
    """Grade again: a child whose earlier grading finished gets a new run (never two runs at once)."""
    batch_id: str = ""
    """The batch's id (``batches`` row), carried in each child's memo; empty for an unrecorded batch."""
    progress_events: bool = False
    """Publish ``batch.progress`` to the exam's live feeds as children finish (activity
    ``publish_batch_progress``; the API's batches set it, so their workers must register it)."""


@dataclass
class GradingOutput:
    """Result of :class:`GradingWorkflow`."""

    status: str
    total: float
    max_total: float
    flagged: list[str]


@dataclass
class ReviewInput:
    """A reviewer's decision (update ``submit_review`` or signal ``review``)."""

    reviewer: str
    overrides: dict[str, float] | None = None
    """question_id -> score replacing the agent's."""
    approve: bool = True
    """``False`` rejects the grading (status ``failed``)."""
    feedback: dict[str, str] | None = None
    """question_id -> feedback replacing the agent's (a question may appear here only: its score is kept)."""


@dataclass
class ReviewAck:
    """Answer of the ``submit_review`` update."""

    accepted: bool
    stage: str


@dataclass
class ExternalEvent:
    """Signal ``external_event``: something happened outside (relayed from Redis)."""

    event_type: str
    payload: dict[str, Any] = field(default_factory=dict)
    event_id: str = ""
    """Producer's id; a repeated id is ignored (at-least-once delivery). Empty: never deduplicated."""


@dataclass
class ProgressView:
    """Answer of the ``get_progress`` query."""

    stage: str
    percentage: float
    """0..100."""
    details: dict[str, Any]
    """questions_done, questions_total, current_node, checkpoint_id, attempt, external_events, ..."""
    updated_at: str
    """ISO 8601 workflow time of the last change."""
