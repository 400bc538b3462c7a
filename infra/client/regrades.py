"""Client commands for score history and regrade requests, over the HTTP API.

- ``gradeflow history SUBMISSION_ID``: every score change of a submission, oldest first.
- ``gradeflow regrade-requests list [--status open|accepted|rejected]``: the reviewers' queue.
- ``gradeflow regrade-requests accept ID --score S [--feedback TEXT] [--reason TEXT]``: the new score
  through the review saga.
- ``gradeflow regrade-requests reject ID --reason TEXT``.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from infra.client.http import ApiClient
from infra.client.render import console

REGRADE_COMMANDS = ("history", "regrade-requests")
PAGE_SIZE = 100


def _score(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {raw!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {raw!r}")
    return value


def add_regrade_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``history`` and ``regrade-requests`` on the ``gradeflow`` subparsers."""
    history = sub.add_parser("history", help="every score change of a submission (old -> new, source, who, why)",
                             parents=[common])
    history.add_argument("submission_id", help="the submission")

    requests = sub.add_parser("regrade-requests", help="regrade requests: list, accept or reject (role reviewer)")
    actions = requests.add_subparsers(dest="requests_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="requests in one status, oldest first", parents=[common])
    listing.add_argument("--status", choices=["open", "accepted", "rejected"], default="open",
                         help="which requests (default open)")
    accept = actions.add_parser("accept", help="accept: set the question's score (through the review saga)",
                                parents=[common])
    accept.add_argument("request_id", help="the request")
    accept.add_argument("--score", type=_score, required=True, metavar="S", help="the question's new score")
    accept.add_argument("--feedback", help="new feedback for the question")
    accept.add_argument("--reason", help="why (kept in the audit log and the history)")
    reject = actions.add_parser("reject", help="reject: the grade stands (a reason is required)", parents=[common])
    reject.add_argument("request_id", help="the request")
    reject.add_argument("--reason", required=True, help="why the grade stands")


def _num(value: Any) -> str:
    return "-" if value is None else f"{round(float(value), 2):g}"


async def show_history(api: ApiClient, submission_id: str) -> int:
    """``gradeflow history ID``: all pages, one table."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await api.request("GET", f"/v1/submissions/{submission_id}/history", what=f"history of {submission_id}",
                                 params={"page_size": PAGE_SIZE, "cursor": cursor})
        rows += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    out = console()
    if not rows:
        out.print(f"submission {submission_id}: no score changes yet")
        return 0
    table = Table("#", "question", "old", "new", "source", "actor", "reason", "at")
    for row in rows:
        table.add_row(str(row["id"]), escape(row["question_id"]), _num(row["old_score"]), _num(row["new_score"]),
                      row["source"], escape(row["actor_id"] or "-"), escape(row["reason"] or ""), row["created_at"])
    out.print(table)
    return 0


def _request_line(req: dict[str, Any]) -> str:
    scores = f" ({_num(req['old_score'])} -> {_num(req['new_score'])})" if req["status"] == "accepted" else ""
    return escape(f"regrade request {req['id']} {req['status']}{scores}: submission {req['submission_id']} "
                  f"question {req['question_id']}")


async def run_regrades(api: ApiClient, args: argparse.Namespace) -> int:
    """Run ``history`` or ``regrade-requests ...``."""
    if args.command == "history":
        return await show_history(api, args.submission_id)
    out = console()
    if args.requests_command == "list":
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await api.request("GET", "/v1/regrade-requests", what="list regrade requests",
                                     params={"status": args.status, "page_size": PAGE_SIZE, "cursor": cursor})
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        if not items:
            out.print(f"no {args.status} regrade requests")
            return 0
        table = Table("id", "submission", "question", "by", "reason", "status", "asked at")
        for req in items:
            table.add_row(req["id"], req["submission_id"], escape(req["question_id"]), escape(req["requested_by"]),
                          escape(req["reason"]), req["status"], req["created_at"])
        out.print(table)
        return 0
    rid = args.request_id
    if args.requests_command == "accept":
        body: dict[str, Any] = {"score": args.score}
        if args.feedback is not None:
            body["feedback"] = args.feedback
        if args.reason:
            body["reason"] = args.reason
        req = await api.request("POST", f"/v1/regrade-requests/{rid}/accept", what=f"accept {rid}", json_body=body)
    else:
        req = await api.request("POST", f"/v1/regrade-requests/{rid}/reject", what=f"reject {rid}",
                                json_body={"reason": args.reason})
    out.print(_request_line(req))
    return 0
