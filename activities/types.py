"""Inputs and outputs of the grading activities (stdlib only, so workflows can import them).

One dataclass in and one out per activity; new fields only with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SubmissionRef:
    """Names one submission of one tenant (input of ``load_grading_context``)."""

    submission_id: str
    """Submission to grade."""
    tenant_id: str
    """Tenant owning it (row-level security)."""
    trace_id: str = ""
    """Trace id of the request that created it."""


@dataclass
class GradingMetadata:
    """Small summary of what is about to be graded (the answers stay in PostgreSQL)."""

    submission_id: str
    """Submission being graded."""
    exam_id: str
    """Exam it answers."""
    questions_total: int
    """Number of questions in the exam."""
    max_total: float
    """Full marks of the exam."""
    status: str
    """Submission status after loading (``grading``)."""
    version: int = 0
    """Submission row version after loading: the version ``persist_grading_result`` expects (its fence)."""


@dataclass
class AgentInput:
    """Input of ``run_grading_agent``."""

    submission_id: str
    """Submission to grade."""
    tenant_id: str
    """Tenant owning it."""
    trace_id: str = ""
    """Trace id propagated to the graph's logs."""
    low_confidence_threshold: float | None = None
    """Override of ``settings.low_confidence_threshold`` for this run."""
    max_concurrency: int | None = None
    """Questions finished at once: bounds the per-question completion work (test hooks, the
    grader_calls row) with a semaphore, so questions complete one by one with ``1``. Model calls
    themselves are not bounded by it. ``None``: no limit."""
    attempt_base: int = 0
    """Attempts made by earlier agent runs of this workflow (the attempt number continues from it)."""
    resume_thread_id: str = ""
    """Checkpoint thread an earlier run (or an earlier workflow run) last reported; tried first on resume."""


@dataclass
class AgentProgress:
    """Compact progress the agent activity signals to its workflow (``agent_progress``)."""

    questions_done: int
    """Questions with a grade (checkpointed or just written)."""
    questions_total: int
    """Questions in the exam."""
    current_node: str = ""
    """Last graph node that finished."""
    checkpoint_id: str = ""
    """Latest checkpoint id of the agent's thread."""
    attempt: int = 1
    """Activity attempt reporting this."""
    thread_id: str = ""
    """Checkpoint thread (the workflow run id, or a fresh suffix after corruption)."""
    finished: bool = False
    """The graph reached its end."""


@dataclass
class AgentOutput:
    """Result of ``run_grading_agent``."""

    grades: list[dict[str, Any]]
    """One dict per question: QuestionGrade fields plus ``rubric_version`` and ``flagged``."""
    total: float
    """Sum of scores."""
    max_total: float
    """Sum of max points."""
    flagged: list[str]
    """Question ids with low-confidence grades."""
    status: str
    """``graded`` or ``needs_review`` (the graph's moderation outcome)."""
    resumed: bool = False
    """This attempt resumed from a checkpoint of an earlier attempt."""
    resume_reason: str = ""
    """Why it resumed or started afresh (e.g. ``no checkpoint``, ``corrupt checkpoint: ...``)."""
    thread_id: str = ""
    """Checkpoint thread used."""
    attempt: int = 1
    """Activity attempt that produced this."""
    checkpoint_id: str = ""
    """Latest checkpoint of the thread when the graph ended."""


@dataclass
class PersistInput:
    """Input of ``persist_grading_result``."""

    submission_id: str
    """Submission graded."""
    tenant_id: str
    """Tenant owning it."""
    grades: list[dict[str, Any]]
    """Grades as produced by the agent (see :class:`AgentOutput`)."""
    total: float
    """Sum of scores."""
    max_total: float
    """Sum of max points."""
    flagged: list[str] = field(default_factory=list)
    """Flagged question ids; non-empty sets the status to ``needs_review``."""
    trace_id: str = ""
    """Trace id, recorded on the outbox event."""
    thread_id: str = ""
    """Checkpoint thread the agent finished on (recorded for checkpoint retention)."""
    keep_reviewed: bool = False
    """A regrade keeping reviewers' scores: questions a reviewer overrode keep their row (and are not flagged)."""
    expected_version: int = 0
    """Submission version this run's load committed; the write is refused at any other version (the fence).
    0 (inputs of runs started before the fence): refused only if the submission already holds a result."""


@dataclass
class PersistOutput:
    """Result of ``persist_grading_result``."""

    status: str
    """Submission status written (``completed`` or ``needs_review``)."""
    version: int
    """Submission row version after the write."""


@dataclass
class StatusInput:
    """Input of ``set_status`` and ``mark_needs_intervention``."""

    submission_id: str
    """Submission to update."""
    tenant_id: str
    """Tenant owning it."""
    status: str = ""
    """Target status (ignored by ``mark_needs_intervention``)."""
    error: str | None = None
    """Error to record on the submission."""
    actor_id: str | None = None
    """Who caused the change (a reviewer), for the outbox event."""
    overrides: dict[str, float] | None = None
    """Reviewer score overrides, question_id -> score (applied with the status change)."""
    trace_id: str = ""
    """Trace id, recorded on the outbox event."""
    feedback: dict[str, str] | None = None
    """Reviewer feedback overrides, question_id -> text (applied with the scores; the score is kept for a
    question that appears here only)."""
    attempts: int = 0
    """Agent attempts the grading spent (``mark_needs_intervention``: recorded on its dead letter)."""
    expected_version: int = 0
    """``set_status``: submission version the workflow last committed; another version refuses the write
    (the fence). 0: not fenced (inputs of runs started before the fence)."""


@dataclass
class StatusOutput:
    """Result of ``set_status`` and ``mark_needs_intervention``."""

    status: str
    """Status after the call."""
    changed: bool
    """Whether the status changed (``False``: already there, or no such submission)."""
    total: float | None = None
    """Submission total after the call (changes with overrides)."""


@dataclass
class BatchProgressInput:
    """Input of ``publish_batch_progress``: a batch's progress, for its exam's live feeds."""

    tenant_id: str
    """Tenant owning the batch (its events channel)."""
    exam_id: str
    """The batch's exam: the exam feeds get the message."""
    batch_id: str
    """The batch (``batches`` row; empty for an unrecorded batch)."""
    total: int
    """Submissions in the batch."""
    done: int
    """Children finished (graded, given up or skipped)."""
    running: int = 0
    """Children running now."""
    counts: dict[str, int] = field(default_factory=dict)
    """Finished children by final status (as ``GET /v1/batches/{id}``'s counts)."""
    kind: str = "grade"
    """``grade`` or ``regrade``."""
