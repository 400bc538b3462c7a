"""Redis key and channel names. Every tenant-scoped name carries the tenant id."""

from __future__ import annotations

PREFIX = "gf"
INVALIDATION_CHANNEL = f"{PREFIX}:invalidate"
"""Broadcast channel for cache invalidations (payload names the tenant and the key)."""
EXTERNAL_EVENTS_STREAM = f"{PREFIX}:external-events"
"""Redis Stream of external events for grading workflows (all tenants; each entry names its tenant)."""


def events_channel(tenant_id: str) -> str:
    """Pub/sub channel of a tenant's live events (status changes and progress)."""
    return f"{PREFIX}:{{{tenant_id}}}:events"


def events_stream(tenant_id: str) -> str:
    """Redis Stream of a tenant's durable events (replay for reconnecting clients)."""
    return f"{PREFIX}:{{{tenant_id}}}:stream"


def published_marker_key(tenant_id: str, event_id: str) -> str:
    """Marker of an outbox event already appended to the tenant's stream (value: its stream id).

    Same hash tag as :func:`events_stream`, so the relay's publish script touches one slot.
    """
    return f"{PREFIX}:{{{tenant_id}}}:published:{event_id}"


def submission_key(tenant_id: str, submission_id: str) -> str:
    """Hot copy of a submission with its results."""
    return f"{PREFIX}:{{{tenant_id}}}:submission:{submission_id}"


def exam_key(tenant_id: str, exam_id: str) -> str:
    """Hot copy of an exam with its current rubrics."""
    return f"{PREFIX}:{{{tenant_id}}}:exam:{exam_id}"


def rubric_hash_key(tenant_id: str, exam_id: str, question_id: str, version: int) -> str:
    """Precomputed hash of one rubric version."""
    return f"{PREFIX}:{{{tenant_id}}}:rubric:{exam_id}:{question_id}:{version}"


def rate_limit_key(tenant_id: str, route_class: str) -> str:
    """Token bucket of a tenant for one route class."""
    return f"{PREFIX}:{{{tenant_id}}}:ratelimit:{route_class}"


def lock_key(name: str) -> str:
    """Distributed lock."""
    return f"{PREFIX}:lock:{name}"


def submission_lock_name(submission_id: str) -> str:
    """Lock name of one writer per submission: the key is ``lock:submission:{id}`` under :data:`PREFIX`."""
    return f"submission:{submission_id}"
