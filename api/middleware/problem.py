"""RFC 9457 ``application/problem+json`` responses for code that runs outside FastAPI's handlers.

Middlewares answer before routing, so they cannot raise into the app's exception handlers; they
send one of these responses instead. The document has the shape ``api/errors.py`` produces:
``type, title, status, detail, instance`` and, for invalid input, ``errors: [{field, message}]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://gradeflow.dev/problems/"


def problem_body(status: int, detail: str, *, slug: str, instance: str | None = None,
                 errors: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
    """Build a problem document.

    Args:
        status: HTTP status code (its phrase is the title).
        detail: explanation specific to this occurrence.
        slug: last segment of the problem ``type`` URI.
        instance: the request path the problem occurred on.
        errors: per-field errors, ``[{"field": ..., "message": ...}]``.

    """
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": HTTPStatus(status).phrase,
                            "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    if errors:
        body["errors"] = [dict(e) for e in errors]
    return body


def problem_response(status: int, detail: str, *, slug: str, instance: str | None = None,
                     errors: Sequence[Mapping[str, str]] | None = None,
                     headers: Mapping[str, str] | None = None) -> Response:
    """A ready-to-send problem response (an ASGI app: ``await resp(scope, receive, send)``)."""
    body = problem_body(status, detail, slug=slug, instance=instance, errors=errors)
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=dict(headers or {}))
