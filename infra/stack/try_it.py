"""The "try it" part of ``gradeflow dev``'s banner: where to look and what to type first.

Printed once everything is ready: the dashboard, the API docs and the Temporal Web UI, then the
commands that create the example exam and submit a student's answers with a live watch, with a
token for the demo tenant (dev secret, so only ever minted by ``gradeflow dev``).
"""

from __future__ import annotations

from typing import Any

DEMO_TENANT = "demo-school"
"""Tenant of the banner's token (the README's examples use it too)."""
DEMO_TOKEN_TTL_SECONDS = 12 * 3600
"""Lifetime of the banner's token: a working day of demos."""
EXAM_FILE = "examples/exam.json"
SUBMISSION_FILE = "examples/submission.json"


def demo_token(settings: Any) -> str:
    """An admin + reviewer token for :data:`DEMO_TENANT` (creates exams, submits, reviews)."""
    from infra.security.tokens import mint_token

    return mint_token(settings, tenant=DEMO_TENANT, roles=["admin", "reviewer"], sub="dev-demo",
                      ttl_seconds=DEMO_TOKEN_TTL_SECONDS)


def try_it_commands(api_url: str, token: str, *, gradeflow: str = ".venv/bin/gradeflow") -> list[str]:
    """The shell lines that grade the example exam's submission and watch it live."""
    return [
        f"export GRADEFLOW_API_URL={api_url} GRADEFLOW_TOKEN={token}",
        f"EXAM=$({gradeflow} exams create -q {EXAM_FILE})",
        f"{gradeflow} submit {SUBMISSION_FILE} --exam $EXAM --watch",
    ]


def try_it_hint(api_url: str, temporal_ui_url: str, token: str, *, grader_delay: float = 0.0) -> str:
    """The banner's "try it" lines (each ends with a newline).

    Args:
        api_url: Base URL of the API (``/ui`` and ``/docs`` hang off it).
        temporal_ui_url: The embedded Temporal Web UI.
        token: Bearer token the example commands use (:func:`demo_token`).
        grader_delay: ``GRADEFLOW_DEMO_GRADER_DELAY_SECONDS`` in effect (0: say how to slow grading down).

    """
    pace = (f"graders take {grader_delay:g}s per question (GRADEFLOW_DEMO_GRADER_DELAY_SECONDS)" if grader_delay
            else "to watch progress question by question: GRADEFLOW_DEMO_GRADER_DELAY_SECONDS=1 make run")
    lines = [
        "  Try it",
        f"    Dashboard       {api_url}/ui",
        f"    API docs        {api_url}/docs",
        f"    Temporal Web UI {temporal_ui_url}  (workflows grade-<submission id>; filter on GradeflowExam,",
        "                    GradeflowStudent, GradeflowStatus)",
        f"    In another terminal (token of tenant {DEMO_TENANT}, valid {DEMO_TOKEN_TTL_SECONDS // 3600} h):",
        *(f"      {line}" for line in try_it_commands(api_url, token)),
        f"    ({pace})",
    ]
    return "".join(f"{line}\n" for line in lines)
