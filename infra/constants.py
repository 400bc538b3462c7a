"""Names shared by the worker, the API, the relay and the tests: queues, workflow and message names.

Workflow code may import this module (stdlib only).
"""

from __future__ import annotations

from enum import StrEnum

ORCHESTRATION_QUEUE = "orchestration"
COGNITIVE_QUEUE = "cognitive"

GRADING_WORKFLOW = "GradingWorkflow"
BATCH_GRADING_WORKFLOW = "BatchGradingWorkflow"
IDEMPOTENCY_PURGE_WORKFLOW = "IdempotencyPurgeWorkflow"
BACKUP_WORKFLOW = "BackupWorkflow"

QUERY_PROGRESS = "get_progress"
SIGNAL_EXTERNAL_EVENT = "external_event"
SIGNAL_AGENT_PROGRESS = "agent_progress"
SIGNAL_REVIEW = "review"
UPDATE_REVIEW = "submit_review"

SEARCH_ATTR_TENANT = "TenantId"
SEARCH_ATTR_TRACE = "TraceId"
SEARCH_ATTR_SUBMISSION = "SubmissionId"
SEARCH_ATTR_EXAM = "GradeflowExam"
"""Keyword search attribute of a grading: its exam's id (filter the Temporal Web UI by exam)."""
SEARCH_ATTR_STUDENT = "GradeflowStudent"
"""Keyword search attribute of a grading: the submission's student id."""
SEARCH_ATTR_STATUS = "GradeflowStatus"
"""Keyword search attribute of a grading: the submission's status, upserted by the workflow as it changes."""


def grading_workflow_id(submission_id: str) -> str:
    """Workflow id of a submission's grading: one per submission, ever."""
    return f"grade-{submission_id}"


class SubmissionStatus(StrEnum):
    """Submission state machine (enforced by a trigger in migrations/0001)."""

    QUEUED = "queued"
    GRADING = "grading"
    NEEDS_REVIEW = "needs_review"
    COMPLETED = "completed"
    FAILED = "failed"
    NEEDS_INTERVENTION = "needs_intervention"


class EventType(StrEnum):
    """Outbox / live event types."""

    SUBMISSION_RECEIVED = "submission.received"
    SUBMISSION_STATUS = "submission.status_changed"
    SUBMISSION_GRADED = "submission.graded"
    SUBMISSION_REVIEWED = "submission.reviewed"
    SUBMISSION_RETRIED = "submission.retried"
    GRADING_PROGRESS = "grading.progress"
    BATCH_PROGRESS = "batch.progress"
    RUBRIC_CHANGED = "rubric.changed"
    REGRADE_REQUESTED = "regrade_request.created"
    REGRADE_REQUEST_RESOLVED = "regrade_request.resolved"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"


SUBMISSION_EVENTS = (EventType.SUBMISSION_RECEIVED, EventType.SUBMISSION_STATUS, EventType.SUBMISSION_GRADED,
                     EventType.SUBMISSION_REVIEWED, EventType.SUBMISSION_RETRIED)
"""Outbox events of the submission aggregate (each carries the row version it committed)."""
