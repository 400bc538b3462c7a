"""Client commands of ``gradeflow``: exams, submit, watch, review, list and webhooks, over the HTTP API.

:func:`add_client_parsers` registers the subcommands (light: nothing heavy is imported to build the
parser); :func:`run_client` runs one. They call the API at ``--api`` / ``GRADEFLOW_API_URL`` (default
``http://<api_host>:<api_port>``) with the bearer token of ``--token`` / ``GRADEFLOW_TOKEN``. Every
error is one line on stderr: exit 2 for what the user can fix (flag, setting, file, a 4xx answer),
1 for a server failure (5xx).
"""

from __future__ import annotations

import argparse
from typing import Any

CLIENT_COMMANDS = ("exams", "submit", "watch", "review", "list", "webhooks", "history", "regrade-requests")
STATUSES = ["queued", "grading", "needs_review", "completed", "failed", "needs_intervention"]


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", metavar="URL",
                        help="API base URL (default GRADEFLOW_API_URL, else http://$GRADEFLOW_API_HOST:$GRADEFLOW_API_PORT)")
    common.add_argument("--token", help="bearer token (default GRADEFLOW_TOKEN; `gradeflow token ...` prints one)")
    return common


def _score_override(raw: str) -> tuple[str, float]:
    question, sep, score = raw.partition("=")
    try:
        if not sep or not question:
            raise ValueError
        return question.strip(), float(score)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected QUESTION=SCORE (e.g. q3=2.5), not {raw!r}") from None


def _feedback(raw: str) -> tuple[str, str]:
    question, sep, text = raw.partition("=")
    if not sep or not question:
        raise argparse.ArgumentTypeError(f"expected QUESTION=TEXT, not {raw!r}")
    return question.strip(), text


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_client_parsers(sub: Any) -> None:
    """Register ``exams``, ``submit``, ``watch``, ``review`` and ``list`` on the ``gradeflow`` subparsers."""
    common = _client_options()
    exams = sub.add_parser("exams", help="exams through the API (create, export)")
    exam_actions = exams.add_subparsers(dest="exams_command", required=True, metavar="ACTION")
    create = exam_actions.add_parser("create", help="create an exam from a JSON file (title, questions with "
                                                    "rubrics; see examples/exam.json)", parents=[common])
    create.add_argument("file", help="the exam's JSON file ('-' reads stdin)")
    create.add_argument("-q", "--quiet", action="store_true", help="print only the new exam's id")
    export = exam_actions.add_parser("export", help="download an exam's gradebook (a row per submission, a column "
                                                    "per question; role reviewer)", parents=[common])
    export.add_argument("exam_id", metavar="ID", help="the exam")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="csv (default) or jsonl")
    export.add_argument("--feedback", action="store_true", help="add each question's feedback")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")

    submit = sub.add_parser("submit", help="submit a student's answers (JSON file: exam_id, student_id, answers)",
                            parents=[common])
    submit.add_argument("file", help="the submission's JSON file ('-' reads stdin)")
    submit.add_argument("--exam", metavar="ID", help="exam id (overrides the file's exam_id)")
    submit.add_argument("--student", metavar="ID", help="student id (overrides the file's student_id)")
    submit.add_argument("--idempotency-key", metavar="KEY", help="makes a retried submit safe (Idempotency-Key)")
    submit.add_argument("--watch", action="store_true", help="then follow its grading live (as `gradeflow watch`)")
    submit.add_argument("-q", "--quiet", action="store_true", help="print only the submission id")
    submit.add_argument("--timeout", type=_positive, default=600, metavar="S",
                        help="with --watch: give up after S seconds (default 600)")

    watch = sub.add_parser("watch", help="follow a submission's grading live, then print its result table",
                           parents=[common])
    watch.add_argument("submission_id", help="the submission to follow")
    watch.add_argument("--timeout", type=_positive, default=600, metavar="S",
                       help="give up after S seconds (default 600)")

    review = sub.add_parser("review", help="approve a submission's grades or override scores (role reviewer)",
                            parents=[common])
    review.add_argument("submission_id", help="the submission to review (needs_review or completed)")
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true", help="accept the grades as they are")
    decision.add_argument("--override", action="append", type=_score_override, metavar="Q=SCORE",
                          help="set question Q's score (repeatable, e.g. --override q3=2.5)")
    review.add_argument("--feedback", action="append", type=_feedback, metavar="Q=TEXT",
                        help="with --override: replace question Q's feedback (repeatable)")
    review.add_argument("--reason", help="why (kept in the audit log)")

    listing = sub.add_parser("list", help="list submissions or exams")
    what = listing.add_subparsers(dest="list_command", required=True, metavar="WHAT")
    subs = what.add_parser("submissions", help="submissions, newest first", parents=[common])
    subs.add_argument("--status", choices=STATUSES, help="only this status (e.g. needs_review: the review queue)")
    subs.add_argument("--exam", metavar="ID", help="only this exam's")
    subs.add_argument("--student", metavar="ID", help="only this student's")
    subs.add_argument("--limit", type=_positive, default=20, metavar="N", help="at most N rows (default 20, max 100)")
    ex = what.add_parser("exams", help="exams, newest first", parents=[common])
    ex.add_argument("--limit", type=_positive, default=20, metavar="N", help="at most N rows (default 20, max 100)")

    from infra.client.webhooks import add_webhook_parser  # argparse and rich only

    add_webhook_parser(sub, common)

    from infra.client.regrades import add_regrade_parsers  # argparse and rich only

    add_regrade_parsers(sub, common)


def run_client(settings: Any, args: argparse.Namespace) -> int:
    """Run one client command; errors are printed as one line and turned into the exit code."""
    import asyncio
    import logging
    import sys

    from infra.client.commands import run
    from infra.client.http import ClientError

    for name in ("httpx", "httpcore", "websockets"):  # a line per request is noise in a user's terminal
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return asyncio.run(run(settings, args))
    except ClientError as exc:
        print(f"gradeflow: {exc}", file=sys.stderr)
        return exc.exit_code
