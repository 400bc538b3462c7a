"""Exams, their questions and versioned rubrics: the SQL and the Redis names the API relies on.

Every rubric version's hash is computed once, when the version is created, stored in
``rubric_versions`` and written to Redis under :func:`infra.cache.keys.rubric_hash_key` (architecture
property 11); readers get it from Redis first and fall back to PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from redis.exceptions import RedisError

from agents.rubric import Question, Rubric, rubric_hash
from infra.cache.copies import Cache
from infra.cache.keys import exam_key, rubric_hash_key
from infra.constants import EventType
from infra.db.pools import PoolManager
from infra.events.outbox import add_event

logger = logging.getLogger(__name__)

ENSURE_TENANT_SQL = "INSERT INTO tenants (id) VALUES (%s) ON CONFLICT DO NOTHING"
INSERT_EXAM_SQL = "INSERT INTO exams (id, tenant_id, title) VALUES (%s, %s, %s) RETURNING created_at"
INSERT_QUESTION_SQL = """
INSERT INTO questions (exam_id, question_id, tenant_id, position, type, prompt, max_points, current_version)
VALUES (%(exam_id)s, %(question_id)s, %(tenant_id)s, %(position)s, %(type)s, %(prompt)s, %(max_points)s,
        %(version)s)"""
INSERT_RUBRIC_SQL = """
INSERT INTO rubric_versions (exam_id, question_id, version, tenant_id, rubric, rubric_hash)
VALUES (%(exam_id)s, %(question_id)s, %(version)s, %(tenant_id)s, %(rubric)s, %(rubric_hash)s)"""
SELECT_EXAM_SQL = "SELECT id, title, created_at, updated_at FROM exams WHERE id = %s"
SELECT_QUESTIONS_SQL = """
SELECT q.question_id, q.type, q.prompt, q.max_points, q.current_version, r.rubric, r.rubric_hash
  FROM questions q
  JOIN rubric_versions r
    ON r.exam_id = q.exam_id AND r.question_id = q.question_id AND r.version = q.current_version
 WHERE q.exam_id = %s
 ORDER BY q.position"""
LOCK_QUESTION_SQL = """
SELECT type, prompt, max_points, current_version FROM questions
 WHERE exam_id = %s AND question_id = %s FOR UPDATE"""
BUMP_VERSION_SQL = """
UPDATE questions SET current_version = current_version + 1
 WHERE exam_id = %s AND question_id = %s RETURNING current_version"""
TOUCH_EXAM_SQL = "UPDATE exams SET updated_at = now() WHERE id = %s"
SELECT_RUBRIC_HASH_SQL = """
SELECT rubric_hash FROM rubric_versions WHERE exam_id = %s AND question_id = %s AND version = %s"""


@dataclass(frozen=True)
class StoredQuestion:
    """A question as stored: the validated model plus its current rubric version and hash."""

    question: Question
    """The question with its current rubric."""
    rubric_version: int
    """Current rubric version (1 at creation)."""
    rubric_hash: str
    """Hash of the current rubric version (:func:`agents.rubric.rubric_hash`)."""

    def to_json(self) -> dict[str, Any]:
        """JSON form used in API replies and the exam cache."""
        return {**self.question.model_dump(mode="json"), "rubric_version": self.rubric_version,
                "rubric_hash": self.rubric_hash}


class QuestionRubricError(ValueError):
    """A new rubric does not fit its question (the message starts with the offending field)."""


def parse_uuid(value: str) -> uuid.UUID | None:
    """Return ``value`` as a UUID, or ``None`` when it is not one (unknown resource).

    Every spelling :class:`uuid.UUID` accepts names the same resource, so callers build Redis keys,
    events and locks from ``str(parse_uuid(value))`` (the canonical spelling), never from ``value``.
    """
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def ensure_tenant(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> None:
    """Create the tenant row if it is missing (inside the tenant's own transaction)."""
    await conn.execute(ENSURE_TENANT_SQL, (tenant_id,))


async def cache_rubric_hash(cache: Cache, tenant_id: str, exam_id: str, question_id: str, version: int,
                            digest: str) -> bool:
    """Write a rubric version's hash to Redis; return ``False`` (logged) when Redis is down."""
    try:
        await cache.set_json(rubric_hash_key(tenant_id, exam_id, question_id, version), digest)
    except (RedisError, OSError) as exc:
        logger.warning("rubric hash not cached (redis unavailable): %s", exc)
        return False
    return True


async def invalidate_exam(cache: Cache, tenant_id: str, exam_id: str) -> None:
    """Drop the exam's hot copy and broadcast the invalidation (best effort; the copy has a TTL)."""
    try:
        await cache.invalidate(tenant_id, exam_key(tenant_id, exam_id))
    except (RedisError, OSError) as exc:
        logger.warning("exam cache not invalidated (redis unavailable): %s", exc)


async def create_exam(pools: PoolManager, cache: Cache, tenant_id: str, *, title: str,
                      questions: list[Question]) -> dict[str, Any]:
    """Store a new exam with version 1 of every rubric and precompute the rubric hashes.

    Args:
        pools: the process pools.
        tenant_id: owner of the exam.
        title: exam title.
        questions: validated questions, in order.
        cache: where the precomputed hashes are written.

    Returns:
        The exam as :func:`get_exam` returns it.

    """
    exam_id = uuid.uuid4()
    stored = [StoredQuestion(q, 1, rubric_hash(q)) for q in questions]
    async with pools.transaction(tenant_id) as conn:
        await ensure_tenant(conn, tenant_id)
        cur = await conn.execute(INSERT_EXAM_SQL, (exam_id, tenant_id, title))
        row = await cur.fetchone()
        if row is None:  # INSERT ... RETURNING always yields the new row
            raise RuntimeError(f"inserting exam {exam_id} returned no row")
        created = row["created_at"]
        async with conn.cursor() as cur:
            await cur.executemany(INSERT_QUESTION_SQL, [
                {"exam_id": exam_id, "question_id": s.question.id, "tenant_id": tenant_id, "position": i,
                 "type": s.question.type.value, "prompt": s.question.prompt,
                 "max_points": s.question.max_points, "version": 1}
                for i, s in enumerate(stored)])
            await cur.executemany(INSERT_RUBRIC_SQL, [_rubric_row(exam_id, tenant_id, s) for s in stored])
    for s in stored:
        await cache_rubric_hash(cache, tenant_id, str(exam_id), s.question.id, 1, s.rubric_hash)
    return {"id": str(exam_id), "title": title, "created_at": created.isoformat(),
            "updated_at": created.isoformat(), "questions": [s.to_json() for s in stored]}


def _rubric_row(exam_id: uuid.UUID, tenant_id: str, s: StoredQuestion) -> dict[str, Any]:
    return {"exam_id": exam_id, "question_id": s.question.id, "version": s.rubric_version,
            "tenant_id": tenant_id, "rubric": Jsonb(s.question.rubric.model_dump(mode="json")),
            "rubric_hash": s.rubric_hash}


async def load_questions(conn: psycopg.AsyncConnection[Any], exam_id: uuid.UUID) -> list[StoredQuestion]:
    """Load an exam's questions with their current rubrics, in exam order."""
    cur = await conn.execute(SELECT_QUESTIONS_SQL, (exam_id,))
    return [
        StoredQuestion(
            Question(id=r["question_id"], type=r["type"], prompt=r["prompt"],
                     max_points=float(r["max_points"]), rubric=Rubric.model_validate(r["rubric"])),
            r["current_version"], r["rubric_hash"])
        for r in await cur.fetchall()
    ]


async def load_exam(pools: PoolManager, tenant_id: str, exam_id: str) -> dict[str, Any] | None:
    """Read an exam from PostgreSQL (``None`` when unknown or another tenant's)."""
    eid = parse_uuid(exam_id)
    if eid is None:
        return None
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute(SELECT_EXAM_SQL, (eid,))
        row = await cur.fetchone()
        if row is None:
            return None
        questions = await load_questions(conn, eid)
    return {"id": str(row["id"]), "title": row["title"], "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat(), "questions": [q.to_json() for q in questions]}


async def read_exam(pools: PoolManager, cache: Cache, tenant_id: str,
                    exam_id: str) -> tuple[dict[str, Any] | None, str]:
    """Read an exam Redis first, PostgreSQL on a miss (back-filled); returns (exam, cache source)."""
    eid = parse_uuid(exam_id)
    if eid is None:
        return None, "database"
    exam_id = str(eid)  # one spelling, one hot copy
    return await cache.read_through(exam_key(tenant_id, exam_id),
                                    lambda: load_exam(pools, tenant_id, exam_id))


async def read_rubric_hash(pools: PoolManager, cache: Cache, tenant_id: str, exam_id: str, question_id: str,
                           version: int) -> tuple[str | None, str]:
    """Return a rubric version's hash, Redis first; returns (hash, source)."""
    eid = parse_uuid(exam_id)
    if eid is None:
        return None, "database"
    exam_id = str(eid)

    async def loader() -> str | None:
        async with pools.transaction(tenant_id) as conn:
            cur = await conn.execute(SELECT_RUBRIC_HASH_SQL, (eid, question_id, version))
            row = await cur.fetchone()
        return row["rubric_hash"] if row else None

    return await cache.read_through(rubric_hash_key(tenant_id, exam_id, question_id, version), loader)


async def update_rubric(pools: PoolManager, cache: Cache, tenant_id: str, exam_id: str, question_id: str,
                        rubric: Rubric, *, trace_id: str | None = None) -> dict[str, Any] | None:
    """Create the next rubric version of a question; outbox event ``rubric.changed`` in the same commit.

    Returns:
        The question's JSON (with new version and hash), or ``None`` when exam or question is unknown.

    Raises:
        QuestionRubricError: the rubric does not fit the question's type and points.

    """
    eid = parse_uuid(exam_id)
    if eid is None:
        return None
    exam_id = str(eid)  # the event, the hash key and the invalidation name the canonical copies
    async with pools.transaction(tenant_id) as conn:
        cur = await conn.execute(LOCK_QUESTION_SQL, (eid, question_id))
        row = await cur.fetchone()
        if row is None:
            return None
        try:
            question = Question(id=question_id, type=row["type"], prompt=row["prompt"],
                                max_points=float(row["max_points"]), rubric=rubric)
        except ValueError as exc:
            raise QuestionRubricError(_first_error(exc)) from None
        cur = await conn.execute(BUMP_VERSION_SQL, (eid, question_id))
        bumped = await cur.fetchone()
        if bumped is None:  # the question row is locked above, so the UPDATE matches it
            raise RuntimeError(f"question {question_id} of exam {eid} vanished while locked")
        version = bumped["current_version"]
        stored = StoredQuestion(question, version, rubric_hash(question))
        await conn.execute(INSERT_RUBRIC_SQL, _rubric_row(eid, tenant_id, stored))
        await conn.execute(TOUCH_EXAM_SQL, (eid,))
        await add_event(conn, tenant_id=tenant_id, event_type=EventType.RUBRIC_CHANGED.value,
                        target_type="question", target_id=f"{exam_id}:{question_id}",
                        payload={"exam_id": exam_id, "question_id": question_id, "version": version,
                                 "previous_version": row["current_version"],
                                 "rubric_hash": stored.rubric_hash},
                        trace_id=trace_id)
    await cache_rubric_hash(cache, tenant_id, exam_id, question_id, version, stored.rubric_hash)
    await invalidate_exam(cache, tenant_id, exam_id)
    return stored.to_json()


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        msg = str(first.get("msg", exc)).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"{loc}: {msg}" if loc and not msg.startswith("rubric.") else msg
    return str(exc)
