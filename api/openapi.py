"""The OpenAPI document: bearer security, idempotency headers, problem responses and examples.

FastAPI derives paths and schemas from the routes; :func:`install_openapi` then adds what routes
do not declare one by one: every error an operation can return (as ``application/problem+json``),
the ``Idempotency-Key`` headers of writes, the ``RateLimit-*``/``Retry-After`` headers, request
examples, and (in the description, as OpenAPI has no WebSocket operations) the live feeds.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
WRITE_METHODS = ("post", "put", "patch")
PUBLIC_PREFIXES = ("/v1/health",)
RATE_HEADERS = {
    "RateLimit-Limit": {"description": "Requests allowed per window.", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left now.", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the bucket is full.", "schema": {"type": "integer"}},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "integer", "minimum": 1}}}


class FieldError(BaseModel):
    """One invalid field."""

    field: str = Field(examples=["answers.q1"])
    message: str = Field(examples=["Field required"])


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every 4xx/5xx response."""

    type: str = Field(examples=["https://gradeflow.dev/problems/validation-error"])
    title: str = Field(examples=["Unprocessable Content"])
    status: int = Field(ge=400, le=599, examples=[422])
    detail: str = Field(examples=["The request is invalid; see errors."])
    instance: str | None = Field(default=None, examples=["/v1/submissions"])
    errors: list[FieldError] | None = None


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/problem+json": {"schema": PROBLEM_REF}}}
    if headers:
        out["headers"] = headers
    return out


IDEMPOTENCY_PARAMS = [
    {"name": name, "in": "header", "required": False,
     "description": "Makes the request safe to retry: the first response is stored for 24 h and replayed "
                    "(`Idempotent-Replayed: true`) for the same key, caller and endpoint.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[A-Za-z0-9_.:-]+$"}}
    for name in ("Idempotency-Key", "X-Idempotency-Key")
]

EXAMPLES = {
    ("/v1/submissions", "post"): {"exam_id": "6f1c2a9e-3b7d-4c1e-9a51-0c2f7d8e9b10", "student_id": "s-1042",
                                  "answers": {"q1": "b", "q2": 42}, "external_id": "lms-attempt-77"},
    ("/v1/exams", "post"): {"title": "Biology quiz", "questions": [
        {"id": "q1", "type": "choice", "prompt": "Which organelle does photosynthesis?", "max_points": 1,
         "rubric": {"options": ["a", "b", "c"], "correct": ["b"]}}]},
}


def _json(example: dict[str, Any]) -> str:
    return "```json\n" + json.dumps(example, indent=2) + "\n```"


_SID, _EID = "8d3f0c52-6a1e-4f0b-9a0c-2b5e7d9f4a11", "6f1c2a9e-3b7d-4c1e-9a51-0c2f7d8e9b10"
WS_EXAMPLES: dict[str, dict[str, Any]] = {
    "snapshot": {"event_id": None, "stream_id": None, "event_type": "snapshot", "submission_id": _SID,
                 "occurred_at": "2026-11-29T10:15:00.120000+00:00",
                 "payload": {"id": _SID, "exam_id": _EID, "student_id": "s-1042", "status": "grading",
                             "total": None, "max_total": 10.0, "results": []}},
    "grading.progress": {"event_id": None, "stream_id": None, "event_type": "grading.progress",
                         "submission_id": _SID, "occurred_at": "2026-11-29T10:15:01.480000+00:00",
                         "payload": {"questions_done": 2, "questions_total": 4, "graded_questions": ["q1", "q3"],
                                     "current_node": "grade_question", "attempt": 1, "finished": False,
                                     "checkpoint_id": "1f0c-…", "thread_id": "…"}},
    "submission.graded": {"event_id": "3c9a6f0e-…", "stream_id": "1764411302311-0",
                          "event_type": "submission.graded", "submission_id": _SID,
                          "occurred_at": "2026-11-29T10:15:02.300000+00:00",
                          "payload": {"status": "completed", "total": 9.5, "max_total": 10.0, "exam_id": _EID,
                                      "flagged": []}},
    "batch.progress": {"event_id": None, "stream_id": None, "event_type": "batch.progress", "submission_id": None,
                       "occurred_at": "2026-11-29T10:16:40.010000+00:00",
                       "payload": {"batch_id": "0b8e4c1d-…", "kind": "grade", "total": 30, "done": 12,
                                   "running": 5, "percentage": 40.0,
                                   "counts": {"completed": 10, "needs_review": 2}}},
}
"""Example messages of the live feeds, shown in the API description."""

LIVE_FEEDS_DESCRIPTION = f"""
## Live feeds (WebSocket)

OpenAPI cannot describe WebSocket routes, so the two live feeds are described here.

- `WS /v1/ws/submissions/{{submission_id}}`: any role of the tenant (a caller whose only role is
  `submitter`: only the submissions it created). A snapshot of the submission (as
  `GET /v1/submissions/{{id}}`), then every event about it.
- `WS /v1/ws/exams/{{exam_id}}`: roles `reviewer` and `admin`. A snapshot `{{exam, submissions_by_status}}`,
  then the events of every submission of the exam and the progress of its batches.

**Authentication.** `Authorization: Bearer <JWT>` on the handshake, or `?token=<JWT>` (browsers cannot
set headers on a WebSocket). A refusal is an accepted handshake closed with a code: **4401** no, an
invalid or an expired token; **4403** the token grants no known role or may not follow this feed;
**4404** no such submission/exam for this token (another tenant's id looks the same); **4429** the
tenant holds `GRADEFLOW_WS_MAX_FEEDS_PER_TENANT` feeds on this API process. Over the connect rate limit
the handshake is answered 429, with PostgreSQL unavailable 503 (both with `Retry-After`). After the
snapshot, **1011** means live events are unavailable (Redis down): read over HTTP, reconnect later.

**Messages.** Every message is one JSON object
`{{event_id, stream_id, event_type, submission_id, occurred_at, payload}}`. The first is always the
`snapshot`; then, in order:

- `grading.progress` (ephemeral, `stream_id` null): questions graded of the total, the ids graded so
  far (`graded_questions`), the graph node that finished.
- `submission.received`, `submission.status_changed`, `submission.graded`, `submission.reviewed`,
  `submission.retried` (durable: they carry an `event_id` and a `stream_id`).
- `batch.progress` (exam feeds only, ephemeral): a batch on the exam advanced: `counts` by status,
  `done`, `total`, `running`, `percentage` (as `GET /v1/batches/{{id}}`).

{_json(WS_EXAMPLES["snapshot"])}

{_json(WS_EXAMPLES["grading.progress"])}

{_json(WS_EXAMPLES["submission.graded"])}

{_json(WS_EXAMPLES["batch.progress"])}

**Resume.** Durable events carry a `stream_id`. Reconnect with
`?last_event_id=<the last stream_id you saw>`: after the snapshot you first receive the durable events
you missed (from the tenant's Redis Stream), then live ones, never a duplicate. Ephemeral messages
(progress) are not replayed: the snapshot holds the current state.
"""
"""Appended to the API description: the WebSocket routes, which OpenAPI cannot describe."""


def _decorate(path: str, method: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("422", None)
    if path.startswith(PUBLIC_PREFIXES):
        op.pop("security", None)
        responses["500"] = _problem("Unexpected error.")
        return
    op["security"] = [{"bearerAuth": []}]
    for code in [c for c in responses if c.startswith("2")]:
        responses[code].setdefault("headers", {}).update(RATE_HEADERS)
    responses["401"] = _problem("Missing, invalid or expired bearer token.",
                                {"WWW-Authenticate": {"schema": {"type": "string"}}})
    responses["403"] = _problem("The token's roles do not allow this operation.")
    responses["404"] = _problem("No such resource (or referenced resource, e.g. the exam) for this tenant; "
                                "other tenants' resources are never revealed.")
    responses["422"] = _problem("Invalid input; `errors` names each invalid field.")
    responses["429"] = _problem("Rate limit exceeded.", {**RETRY_AFTER, **RATE_HEADERS})
    responses["500"] = _problem("Unexpected error.")
    responses["503"] = _problem("A dependency is unavailable or the database is busy.", RETRY_AFTER)
    if method in WRITE_METHODS:
        op.setdefault("parameters", []).extend(IDEMPOTENCY_PARAMS)
        responses["409"] = _problem("A request with this idempotency key is still in flight.", RETRY_AFTER)
        responses["413"] = _problem("The request body is too large.")
        example = EXAMPLES.get((path, method))
        content = op.get("requestBody", {}).get("content", {}).get("application/json")
        if example is not None and content is not None:
            content["example"] = example


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with a generator that completes FastAPI's document (cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        description = f"{app.description or ''}\n{LIVE_FEEDS_DESCRIPTION}"
        schema = get_openapi(title=app.title, version=app.version, description=description,
                             routes=app.routes, tags=app.openapi_tags)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        _, defs = models_json_schema([(FieldError, "validation"), (Problem, "validation")],
                                     ref_template="#/components/schemas/{model}")
        schemas.update(defs["$defs"])
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "HS256 JWT with claims `sub`, `tenant`, `roles` (submitter, reviewer, admin) and "
                           "`exp`. Mint one for development with `gradeflow token --tenant T --role R`."}
        for path, item in schema.get("paths", {}).items():
            for method, op in item.items():
                if isinstance(op, dict) and "responses" in op:
                    _decorate(path, method, op)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
