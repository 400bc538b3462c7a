"""Orchestration-side grading activities: load context, persist results, change status.

Each public method is one Temporal activity, bound by the worker on an instance that holds the
process's :class:`infra.db.pools.PoolManager` and settings. Database errors that retrying cannot fix
(a refused status transition, a constraint violation, a missing submission) are raised as
non-retryable ``ApplicationError``s so the workflow can mark the job for intervention at once.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.types import (
    GradingMetadata,
    PersistInput,
    PersistOutput,
    StatusInput,
    StatusOutput,
    SubmissionRef,
)
from infra.cache import keys
from infra.cache.copies import Cache
from infra.constants import EventType, SubmissionStatus
from infra.db.pools import PoolManager
from infra.events import dead_letters, live
from infra.events.causes import GRADE_CAUSES, RUN_CAUSES, submission_flow
from infra.events.outbox import add_event, derived_event_id
from infra.stores import checkpoints, grading, history, submissions, writer
from infra.stores.rubrics import RubricCache, questions_loader

logger = logging.getLogger(__name__)

PERMANENT_DB_ERRORS = (psycopg.errors.IntegrityError, psycopg.errors.DataError)
"""Errors a retry cannot fix: constraint/trigger violations and bad values."""


def _permanent(exc: BaseException, kind: str) -> ApplicationError:
    return ApplicationError(f"{kind}: {exc}", type=kind, non_retryable=True)


GRADED_STATUSES = frozenset({SubmissionStatus.COMPLETED, SubmissionStatus.NEEDS_REVIEW, SubmissionStatus.FAILED})
"""Statuses holding a result: an unversioned persist (input of a run started before the fence) must not
overwrite one (the same-status update would pass the state machine's trigger silently)."""
VERSION_CONFLICT = "VersionConflict"
"""Type of the non-retryable error of a write refused by the version fence (a newer change exists)."""


class GradingActivities:
    """Activities that read and write a submission's grading state.

    Args:
        pools: The process's pool manager (PostgreSQL with RLS, Redis).
        settings: :class:`infra.settings.Settings` (cache TTL).
        rubric_cache: The process's cache of questions and rubrics (``None``: PostgreSQL every time).

    """

    def __init__(self, pools: PoolManager, settings: Any, *, rubric_cache: RubricCache | None = None) -> None:
        self.pools = pools
        self.settings = settings
        self.rubric_cache = rubric_cache

    def _cache(self) -> Cache:
        return Cache(self.pools.redis, ttl_seconds=int(getattr(self.settings, "cache_ttl_seconds", 3600)))

    def _writer(self, submission_id: str) -> Any:
        """``lock:submission:{id}`` for a change of the submission's grades (see :mod:`infra.stores.writer`)."""
        return writer.writer_for(self.pools, submission_id, writer.WriterOptions.from_settings(self.settings),
                                 owner=f"activity:{_workflow_id()}")

    @activity.defn
    async def load_grading_context(self, ref: SubmissionRef) -> GradingMetadata:
        """Check the submission can be graded, set it to ``grading`` and return a summary.

        Raises:
            ApplicationError: ``SubmissionNotFound``, ``NoQuestions`` or ``InvalidTransition``
                (non-retryable).

        """
        try:
            async with self.pools.transaction(ref.tenant_id) as conn:
                # Not the answers: the agent reads them itself (they would only be counted here).
                submission = await grading.load_submission(conn, ref.submission_id)
                exam = await questions_loader(self.rubric_cache, ref.tenant_id)(conn, submission["exam_id"])
                if not exam.questions:
                    raise ApplicationError(f"exam {submission['exam_id']} has no questions",
                                           type="NoQuestions", non_retryable=True)
                row = await grading.set_status(conn, ref.submission_id, SubmissionStatus.GRADING)
                await checkpoints.record_thread(conn, tenant_id=ref.tenant_id, submission_id=ref.submission_id,
                                                thread_id=_run_id())  # the agent's first thread (retention)
                if submission["status"] != SubmissionStatus.GRADING:
                    await add_event(
                        conn, tenant_id=ref.tenant_id, event_type=EventType.SUBMISSION_STATUS,
                        target_type="submission", target_id=ref.submission_id, version=row["version"],
                        payload={"status": SubmissionStatus.GRADING, "from": submission["status"],
                                 "exam_id": submission["exam_id"]},
                        trace_id=ref.trace_id or None,
                        event_id=_change_id(ref.submission_id, row["version"], EventType.SUBMISSION_STATUS,
                                            SubmissionStatus.GRADING),
                        **await submission_flow(conn, ref.tenant_id, ref.submission_id, RUN_CAUSES),
                    )
        except grading.SubmissionNotFoundError as exc:
            raise _permanent(exc, "SubmissionNotFound") from exc
        except PERMANENT_DB_ERRORS as exc:
            raise _permanent(exc, "InvalidTransition") from exc
        await live.publish_status(self.pools.redis, tenant_id=ref.tenant_id,
                                  submission_id=ref.submission_id, status=SubmissionStatus.GRADING)
        return GradingMetadata(
            submission_id=ref.submission_id, exam_id=submission["exam_id"],
            questions_total=len(exam.questions),
            max_total=sum(q.max_points for q in exam.questions), status=SubmissionStatus.GRADING,
            version=int(row["version"]),
        )

    @activity.defn
    async def persist_grading_result(self, inp: PersistInput) -> PersistOutput:
        """Store results, status and an outbox event in one transaction; then the hot copy and a notification.

        PostgreSQL first, always: the transaction commits whatever Redis does. The hot copy is written
        after the commit, guarded by the row version (an older copy never overwrites a newer one); if
        Redis is down the copy is left to the outbox relay, which drops it once Redis answers (the
        ``submission.graded`` event carries the committed version). A re-run (retry after a lost reply)
        writes the same rows and the same event id, so nothing is duplicated.

        Raises:
            ApplicationError: ``InvalidResult`` (non-retryable) when a constraint or the status
                state machine refuses the write; nothing is committed then.

        """
        flagged, total = list(inp.flagged), inp.total
        try:
            async with self._writer(inp.submission_id), self.pools.transaction(inp.tenant_id) as conn:
                current = await writer.lock_submission(conn, inp.submission_id)
                if current is None:
                    raise grading.SubmissionNotFoundError(f"submission {inp.submission_id} not found")
                if inp.keep_reviewed:  # a regrade: a reviewer's score stands, so it asks for no review
                    reviewed = await grading.reviewed_questions(conn, inp.submission_id)
                    flagged = [q for q in flagged if q not in reviewed]
                status = SubmissionStatus.NEEDS_REVIEW if flagged else SubmissionStatus.COMPLETED
                fenced = (current["version"] == inp.expected_version if inp.expected_version
                          else current["status"] not in GRADED_STATUSES)  # the trigger refuses the rest
                if not fenced:
                    if await writer.event_committed(conn, _change_id(inp.submission_id, current["version"],
                                                                     EventType.SUBMISSION_GRADED, status)):
                        return PersistOutput(status=current["status"], version=current["version"])  # a re-run
                    raise writer.VersionConflictError(inp.submission_id, inp.expected_version, current["version"])
                row = await grading.save_results(
                    conn, tenant_id=inp.tenant_id, submission_id=inp.submission_id, grades=inp.grades,
                    status=status, total=inp.total, max_total=inp.max_total, keep_reviewed=inp.keep_reviewed,
                    trace_id=inp.trace_id or None,
                )
                if row.get("total") is not None:
                    total = float(row["total"])
                await add_event(
                    conn, tenant_id=inp.tenant_id, event_type=EventType.SUBMISSION_GRADED,
                    target_type="submission", target_id=inp.submission_id, version=row["version"],
                    payload={"status": status, "total": total, "max_total": inp.max_total,
                             "exam_id": row["exam_id"],
                             "flagged": flagged},
                    trace_id=inp.trace_id or None,
                    event_id=_change_id(inp.submission_id, row["version"], EventType.SUBMISSION_GRADED, status),
                    **await submission_flow(conn, inp.tenant_id, inp.submission_id, RUN_CAUSES),
                )
                await checkpoints.record_thread(conn, tenant_id=inp.tenant_id, submission_id=inp.submission_id,
                                                thread_id=inp.thread_id)
                await dead_letters.close_by_reference(  # graded after an intervention: its dead letter is resolved
                    conn, tenant_id=inp.tenant_id, kind="submission", reference_id=inp.submission_id,
                    status="resolved", actor="system", reason=f"graded ({status})", detail={"run_id": _run_id()},
                    from_statuses=("open", "replayed"))
        except grading.SubmissionNotFoundError as exc:
            raise _permanent(exc, "SubmissionNotFound") from exc
        except writer.VersionConflictError as exc:
            raise _permanent(exc, VERSION_CONFLICT) from exc
        except PERMANENT_DB_ERRORS as exc:
            raise _permanent(exc, "InvalidResult") from exc
        await self._refresh_view(inp.tenant_id, inp.submission_id)
        await live.publish_status(self.pools.redis, tenant_id=inp.tenant_id, submission_id=inp.submission_id,
                                  status=status, data={"total": total, "max_total": inp.max_total})
        return PersistOutput(status=row["status"], version=int(row["version"]))

    @activity.defn
    async def set_status(self, inp: StatusInput) -> StatusOutput:
        """Move a submission to ``inp.status``, applying reviewer scores and feedback in one transaction.

        Raises:
            ApplicationError: ``InvalidTransition`` / ``SubmissionNotFound`` / ``InvalidOverride``
                (non-retryable).

        """
        try:
            async with self._writer(inp.submission_id), self.pools.transaction(inp.tenant_id) as conn:
                current = await writer.lock_submission(conn, inp.submission_id)
                if current is not None and inp.expected_version and current["version"] != inp.expected_version:
                    if await writer.event_committed(conn, _change_id(inp.submission_id, current["version"],
                                                                     "set_status", inp.status, inp.actor_id or "")):
                        after = await grading.load_submission(conn, inp.submission_id)  # a re-run: already applied
                        return StatusOutput(status=after["status"], changed=True,
                                            total=float(after["total"]) if after.get("total") is not None else None)
                    raise writer.VersionConflictError(inp.submission_id, inp.expected_version, current["version"])
                before = await grading.load_submission(conn, inp.submission_id)
                total = None
                scores_before = await history.current_scores(conn, inp.submission_id)
                if inp.overrides or inp.feedback:
                    total = await grading.apply_overrides(conn, inp.submission_id, inp.overrides or {},
                                                                feedback=inp.feedback)
                row = await grading.set_status(conn, inp.submission_id, inp.status, error=inp.error)
                if inp.overrides:
                    changes = history.changes_between(scores_before,
                                                      await history.current_scores(conn, inp.submission_id))
                    await history.record_changes(
                        conn, tenant_id=inp.tenant_id, submission_id=inp.submission_id,
                        changes=[history.ScoreChange(c.question_id, c.old, c.new) for c in changes],
                        source="review", submission_version=int(row["version"]), actor_id=inp.actor_id,
                        trace_id=inp.trace_id or None)
                changed = before["status"] != row["status"]
                if changed or inp.overrides or inp.feedback:
                    payload: dict[str, Any] = {"status": row["status"], "from": before["status"], "error": inp.error,
                               "exam_id": before["exam_id"], "overrides": inp.overrides or {}}
                    if inp.feedback:
                        payload["feedback"] = inp.feedback
                    await add_event(
                        conn, tenant_id=inp.tenant_id, target_type="submission", target_id=inp.submission_id,
                        event_type=EventType.SUBMISSION_REVIEWED if inp.actor_id else EventType.SUBMISSION_STATUS,
                        version=row["version"], actor_id=inp.actor_id, trace_id=inp.trace_id or None,
                        payload=payload,
                        event_id=_change_id(inp.submission_id, row["version"], "set_status", row["status"],
                                            inp.actor_id or ""),
                        **await submission_flow(conn, inp.tenant_id, inp.submission_id,
                                                GRADE_CAUSES if inp.actor_id else RUN_CAUSES),
                    )
                after = await grading.load_submission(conn, inp.submission_id)
        except grading.SubmissionNotFoundError as exc:
            raise _permanent(exc, "SubmissionNotFound") from exc
        except KeyError as exc:
            raise _permanent(exc, "InvalidOverride") from exc
        except writer.VersionConflictError as exc:
            raise _permanent(exc, VERSION_CONFLICT) from exc
        except PERMANENT_DB_ERRORS as exc:
            raise _permanent(exc, "InvalidTransition") from exc
        await self._refresh_view(inp.tenant_id, inp.submission_id)
        if changed:
            await live.publish_status(self.pools.redis, tenant_id=inp.tenant_id,
                                      submission_id=inp.submission_id, status=row["status"])
        total_after = float(after["total"]) if after.get("total") is not None else total
        return StatusOutput(status=row["status"], changed=changed, total=total_after)

    @activity.defn
    async def mark_needs_intervention(self, inp: StatusInput) -> StatusOutput:
        """Set ``needs_intervention`` with the error recorded; tolerant of every current state.

        A submission that is already in a final state, or does not exist, is left alone
        (``changed=False``): this activity must never be the reason a failure is lost.
        """
        try:
            async with self.pools.transaction(inp.tenant_id) as conn:
                before = await grading.load_submission(conn, inp.submission_id)
                if before["status"] in (SubmissionStatus.QUEUED, SubmissionStatus.GRADING,
                                        SubmissionStatus.NEEDS_INTERVENTION):
                    row = await grading.set_status(conn, inp.submission_id,
                                                         SubmissionStatus.NEEDS_INTERVENTION, error=inp.error)
                    await add_event(
                        conn, tenant_id=inp.tenant_id, event_type=EventType.SUBMISSION_STATUS,
                        target_type="submission", target_id=inp.submission_id, version=row["version"],
                        payload={"status": SubmissionStatus.NEEDS_INTERVENTION, "from": before["status"],
                                 "exam_id": before["exam_id"],
                                 "error": inp.error}, trace_id=inp.trace_id or None,
                        event_id=_change_id(inp.submission_id, row["version"], EventType.SUBMISSION_STATUS,
                                            SubmissionStatus.NEEDS_INTERVENTION),
                        **await submission_flow(conn, inp.tenant_id, inp.submission_id, RUN_CAUSES),
                    )
                    run_id = _run_id()
                    await dead_letters.record_dead_letter(  # an operator sees it in the DLQ and can replay it
                        conn, tenant_id=inp.tenant_id, kind="submission", reference_id=inp.submission_id,
                        event_type="grading", error=inp.error or "needs intervention", attempts=max(1, inp.attempts),
                        failure_id=run_id or None,
                        payload={"submission_id": inp.submission_id, "exam_id": before["exam_id"],
                                 "workflow_id": _workflow_id(), "run_id": run_id, "error": inp.error,
                                 "attempts": max(1, inp.attempts), "status_from": before["status"],
                                 "trace_id": inp.trace_id or before.get("trace_id") or ""})
                else:
                    logger.warning("submission %s is %s; not marking needs_intervention (%s)",
                                   inp.submission_id, before["status"], inp.error)
                    return StatusOutput(status=before["status"], changed=False)
        except grading.SubmissionNotFoundError:
            logger.error("cannot mark missing submission %s for intervention: %s", inp.submission_id, inp.error)
            return StatusOutput(status="", changed=False)
        await self._invalidate(inp.tenant_id, inp.submission_id)
        await live.publish_status(self.pools.redis, tenant_id=inp.tenant_id, submission_id=inp.submission_id,
                                  status=SubmissionStatus.NEEDS_INTERVENTION, data={"error": inp.error})
        return StatusOutput(status=row["status"], changed=True)

    async def _refresh_view(self, tenant_id: str, submission_id: str) -> None:
        """Replace the hot copy with the committed read model (version-guarded); never raises.

        A copy that cannot be written is dropped if possible; if Redis is down altogether, the outbox
        relay drops it once Redis answers (see :func:`infra.stores.submissions.copy_repair_handler`).
        """
        try:
            await submissions.refresh_copy(self.pools, self._cache(), tenant_id, submission_id)
        except Exception as exc:  # noqa: BLE001 - the database is the truth; drop the stale copy
            logger.warning("cache refresh of %s failed: %r", submission_id, exc)
            await self._invalidate(tenant_id, submission_id)

    async def _invalidate(self, tenant_id: str, submission_id: str) -> None:
        try:
            await self.pools.redis.delete(keys.submission_key(tenant_id, submission_id))
        except Exception as exc:  # noqa: BLE001 - repaired by the relay (copy_repair_handler)
            logger.warning("cache invalidation of %s failed: %r", submission_id, exc)


def _run_id() -> str:
    """Run id of the workflow whose activity this is (the agent's checkpoint thread); empty outside one."""
    try:
        return activity.info().workflow_run_id or ""
    except RuntimeError:
        return ""


def _workflow_id() -> str:
    try:
        return activity.info().workflow_id or ""
    except RuntimeError:
        return ""


def _change_id(submission_id: str, version: int, *change: str) -> str | None:
    """Deterministic event id of a state change made by this activity's workflow run.

    Derived from the workflow id, run id, submission, the row version the change committed and the
    change, so a retried or re-run activity (which finds the change made: same status, same version)
    emits the same event id. Outside an activity (no workflow), a fresh id is used.
    """
    try:
        info = activity.info()
    except RuntimeError:
        return None
    return derived_event_id(info.workflow_id or "", info.workflow_run_id or "", submission_id, version, *change)
