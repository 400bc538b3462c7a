"""The client commands: exams create, submit, review and list (watch is :mod:`infra.client.watch`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra.client.http import ApiClient, ClientError, resolve_target
from infra.client.render import console, exam_line, exams_table, print_result, submissions_table


def read_json(name: str, flag: str = "FILE") -> dict[str, Any]:
    """The JSON object in file ``name`` (``-``: stdin); a ClientError naming the file otherwise."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ClientError(f"{flag} {name}: cannot read it ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(f"{flag} {name}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ClientError(f"{flag} {name}: expected a JSON object, got {type(data).__name__}")
    return data


async def create_exam(api: ApiClient, args: argparse.Namespace) -> int:
    """``gradeflow exams create FILE``."""
    body = read_json(args.file)
    exam = await api.request("POST", "/v1/exams", what=f"create exam from {args.file}", json_body=body)
    if args.quiet:
        print(exam["id"])
    else:
        console().print(exam_line(exam))
    return 0


async def submit(api: ApiClient, args: argparse.Namespace) -> int:
    """``gradeflow submit FILE [--exam ID] [--student ID] [--watch]``."""
    body = read_json(args.file)
    if args.exam:
        body["exam_id"] = args.exam
    if args.student:
        body["student_id"] = args.student
    for key, flag in (("exam_id", "--exam"), ("student_id", "--student")):
        if not body.get(key):
            raise ClientError(f"FILE {args.file}: no {key}; add it to the file or pass {flag}")
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    accepted = await api.request("POST", "/v1/submissions", what="submit", json_body=body, headers=headers)
    if args.quiet:
        print(accepted["submission_id"])
    else:
        console().print(f"submission {accepted['submission_id']} accepted ({accepted['status']}; workflow "
                        f"{accepted['workflow_id']}, trace {accepted['trace_id']})", highlight=False)
    if args.watch:
        from infra.client.watch import watch

        return await watch(api, accepted["submission_id"], timeout=args.timeout, quiet=args.quiet)
    return 0


async def review(api: ApiClient, args: argparse.Namespace) -> int:
    """``gradeflow review ID --approve | --override Q=SCORE ... [--feedback Q=TEXT] [--reason ...]``."""
    overrides: dict[str, dict[str, Any]] = {q: {"score": s} for q, s in args.override or []}
    for question, text in args.feedback or []:
        if question not in overrides:
            raise ClientError(f"--feedback {question}=...: only with --override {question}=SCORE")
        overrides[question]["feedback"] = text
    body: dict[str, Any] = {"approve": True, "overrides": overrides}
    if args.reason:
        body["reason"] = args.reason
    sid = args.submission_id
    view = await api.request("POST", f"/v1/submissions/{sid}/review", what=f"review {sid}", json_body=body)
    out = console()
    action = "approved" if not overrides else "overridden (" + ", ".join(
        f"{q}={o['score']:g}" for q, o in overrides.items()) + ")"
    out.print(f"submission {view['id']} {action}: status {view['status']}", highlight=False)
    print_result(out, view)
    return 0


async def list_rows(api: ApiClient, args: argparse.Namespace) -> int:
    """``gradeflow list submissions [--status S] ...`` and ``gradeflow list exams``."""
    size = min(args.limit, 100)
    if args.list_command == "exams":
        page = await api.request("GET", "/v1/exams", what="list exams", params={"page_size": size})
        console().print(exams_table(page["items"]))
        return 0
    params = {"page_size": size, "status": args.status, "exam_id": args.exam, "student_id": args.student}
    page = await api.request("GET", "/v1/submissions", what="list submissions", params=params)
    items = page["items"]
    if not items:
        console().print("no " + (f"{args.status} " if args.status else "") + "submissions", highlight=False)
        return 0
    console().print(submissions_table(items))
    return 0


async def run(settings: Any, args: argparse.Namespace) -> int:
    """Run the client command ``args.command``."""
    target = resolve_target(settings, args.api, args.token)
    async with ApiClient(target) as api:
        if args.command == "exams" and args.exams_command == "export":
            from infra.client.export import export_grades

            return await export_grades(api, args)
        if args.command == "exams":
            return await create_exam(api, args)
        if args.command == "submit":
            return await submit(api, args)
        if args.command == "review":
            return await review(api, args)
        if args.command == "list":
            return await list_rows(api, args)
        if args.command == "webhooks":
            from infra.client.webhooks import webhooks

            return await webhooks(api, args)
        if args.command in ("history", "regrade-requests"):
            from infra.client.regrades import run_regrades

            return await run_regrades(api, args)
        from infra.client.watch import watch

        return await watch(api, args.submission_id, timeout=args.timeout)
