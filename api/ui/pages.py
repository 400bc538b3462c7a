"""The dashboard's pages: ``/ui`` and its sign-in, exam, review-queue and submission pages; ``/`` redirects.

Each page is a shell rendered from ``templates/``: the layout, labelled controls and empty regions
that its script fills from the ``/v1`` API with the token the browser holds (pages need no token
themselves). Links to routes other packages add (the exam's CSV export, a submission's score
history) are rendered only when the app serves such a route, so a page never asks for a 404.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api.deps import ExamId, SubmissionId
from api.ui.dev_token import PATH as DEV_TOKEN_PATH
from api.ui.dev_token import dev_tokens_enabled

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_URL = "/ui/static"
CSV_ROUTE = "/v1/exams/{}/grades.csv"
"""The exam's CSV export (added by another module; linked once the app serves it)."""
HISTORY_ROUTE = "/v1/submissions/{}/history"
"""A submission's score history (added by another module; shown once the app serves it)."""
SECURITY_HEADERS = {
    # scripts and styles from this origin only; fetches and the live feeds ('self' covers ws: in CSP 3)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

_PARAM = re.compile(r"\{[^}]+\}")


def route_paths(app: Any) -> set[str]:
    """Every path the app routes, each ``{param}`` written ``{}`` (included routers walked too)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI keeps included routers nested
    except ImportError:  # pragma: no cover - FastAPI versions with flat route lists
        routes: Any = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    return {_PARAM.sub("{}", str(getattr(route, "path", ""))) for route in routes}


def serves(request: Request, pattern: str) -> bool:
    """Whether the app has a route whose path, with every ``{param}`` as ``{}``, is ``pattern``."""
    return pattern in route_paths(request.app)


def _page(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, {"title": title, "static": STATIC_URL, **context})
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/")
async def root() -> RedirectResponse:
    """The dashboard is the front page."""
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui", response_class=HTMLResponse)
async def exams_page(request: Request) -> HTMLResponse:
    """The tenant's exams."""
    return _page(request, "exams.html", "Exams", nav="exams")


@router.get("/ui/signin", response_class=HTMLResponse)
async def signin_page(request: Request) -> HTMLResponse:
    """Sign in with a bearer token (and, outside prod, mint a dev reviewer token)."""
    dev = dev_tokens_enabled(request.app.state.settings)
    return _page(request, "signin.html", "Sign in", nav="signin", dev_token_url=DEV_TOKEN_PATH if dev else "")


@router.get("/ui/exams/{exam_id}", response_class=HTMLResponse)
async def exam_page(request: Request, exam_id: ExamId) -> HTMLResponse:
    """One exam: counts by status, its submissions (paged) with live progress."""
    csv_url = CSV_ROUTE.format(exam_id) if serves(request, CSV_ROUTE) else ""
    return _page(request, "exam.html", "Exam", nav="exams", exam_id=exam_id, csv_url=csv_url)


@router.get("/ui/review", response_class=HTMLResponse)
async def review_page(request: Request) -> HTMLResponse:
    """The review queue: every ``needs_review`` submission's flagged answers, to approve or override."""
    return _page(request, "review.html", "Review queue", nav="review")


@router.get("/ui/submissions/{submission_id}", response_class=HTMLResponse)
async def submission_page(request: Request, submission_id: SubmissionId) -> HTMLResponse:
    """One submission: answers, grades, feedback, live progress and (when served) its score history."""
    history_url = HISTORY_ROUTE.format(submission_id) if serves(request, HISTORY_ROUTE) else ""
    return _page(request, "submission.html", "Submission", nav="", submission_id=submission_id,
                 history_url=history_url)
