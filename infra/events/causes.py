"""The envelope of a submission's events: one ``correlation_id``, and the event that caused each one.

Every event of a submission (and of what hangs off it: regrade requests) carries the submission's
id as ``correlation_id``. Its ``causation_id`` is the submission's latest stored event of the types
that cause it (:func:`submission_flow`):

- ``submission.received`` starts the flow (no cause);
- a grading run's events (``status_changed``, ``graded``) are caused by what started the run: the
  latest ``submission.received`` or ``submission.retried`` (a regrade run, which no event starts,
  points at the same one);
- a review (the workflow's decision or the review saga's override) and a regrade request are
  caused by the latest ``submission.graded``; a compensated override by the ``submission.reviewed``
  it undoes;
- an operator's ``submission.retried`` by the latest event (the change that stopped the grading).

Causes are looked up in the writer's transaction (``event_outbox_target_idx``), so a re-run finds
the same cause, and an event written with a stored ``event_id`` keeps its stored envelope anyway.
"""

from __future__ import annotations

from typing import Any

import psycopg

from infra.constants import EventType
from infra.events.outbox import latest_event_id

RUN_CAUSES = (EventType.SUBMISSION_RECEIVED.value, EventType.SUBMISSION_RETRIED.value)
"""What starts a grading run: its events' cause."""
GRADE_CAUSES = (EventType.SUBMISSION_GRADED.value,)
"""What a review or a regrade request answers."""
REVIEW_CAUSES = (EventType.SUBMISSION_REVIEWED.value,)
"""What a compensation undoes."""
ANY_CAUSE: tuple[str, ...] = ()
"""The latest event, whatever its type."""


async def submission_flow(conn: psycopg.AsyncConnection[Any], tenant_id: str, submission_id: str,
                          causes: tuple[str, ...]) -> dict[str, str | None]:
    """``correlation_id`` and ``causation_id`` keyword arguments of :func:`~infra.events.outbox.add_event`."""
    cause = await latest_event_id(conn, tenant_id=tenant_id, target_type="submission",
                                  target_id=str(submission_id), event_types=causes)
    return {"correlation_id": str(submission_id), "causation_id": cause}
