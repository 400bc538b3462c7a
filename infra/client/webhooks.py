"""``gradeflow webhooks add|list|deliveries|rotate-secret|enable|delete``: webhook endpoints through the API (admin).

``add`` and ``rotate-secret`` print the signing secret: the only time it is shown.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape
from rich.table import Table

from infra.client.http import ApiClient
from infra.client.render import console

ACTIONS = ("add", "list", "deliveries", "rotate-secret", "enable", "delete")


def add_webhook_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``gradeflow webhooks ACTION`` on the ``gradeflow`` subparsers."""
    hooks = sub.add_parser("webhooks", help="signed webhook endpoints through the API (role admin)")
    actions = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register an endpoint; prints its secret (shown once)", parents=[common])
    add.add_argument("url", help="the receiver's URL (https in prod)")
    add.add_argument("--event", action="append", required=True, metavar="TYPE", dest="events",
                     help="an event type to send, e.g. submission.graded (repeatable; '*' for every event)")
    add.add_argument("--description", help="a note for the people who manage it")
    actions.add_parser("list", help="the tenant's endpoints and their status", parents=[common])
    deliveries = actions.add_parser("deliveries", help="an endpoint's deliveries, newest first", parents=[common])
    deliveries.add_argument("endpoint_id", metavar="ID")
    deliveries.add_argument("--status", choices=("pending", "delivered", "failed"), help="only this status")
    deliveries.add_argument("--limit", type=int, default=20, metavar="N", help="at most N rows (default 20, max 100)")
    for name, text in (("rotate-secret", "a new secret (printed once); the old one signs too for the grace period"),
                       ("enable", "turn a disabled endpoint back on"), ("delete", "delete an endpoint")):
        action = actions.add_parser(name, help=text, parents=[common])
        action.add_argument("endpoint_id", metavar="ID")


def _endpoints_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "status", "url", "events", "failing since / disabled because")
    for item in items:
        note = item.get("disabled_reason") or item.get("failing_since") or ""
        style = "red" if item["status"] == "disabled" else "green"
        table.add_row(item["id"], f"[{style}]{item['status']}[/]", escape(item["url"]),
                      escape(", ".join(item["event_types"])), escape(str(note)))
    return table


def _deliveries_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "event", "type", "status", "attempts", "code", "error", "next attempt")
    for item in items:
        table.add_row(str(item["id"]), item["event_id"], item["event_type"], item["status"], str(item["attempts"]),
                      str(item["last_status_code"] or "-"), escape((item["last_error"] or "")[:60]),
                      str(item["next_attempt_at"] or "-"))
    return table


async def webhooks(api: ApiClient, args: argparse.Namespace) -> int:
    """Run ``gradeflow webhooks ACTION``."""
    action = args.webhooks_command
    out = console()
    if action == "add":
        body = {"url": args.url, "event_types": args.events, "description": args.description}
        hook = await api.request("POST", "/v1/webhooks", what="add webhook",
                                 json_body={k: v for k, v in body.items() if v is not None})
        out.print(escape(f"webhook {hook['id']} added: {hook['url']} ({', '.join(hook['event_types'])})"))
        out.print(escape(f"secret (shown once, keep it): {hook['secret']}"))
        return 0
    if action == "list":
        out.print(_endpoints_table((await api.request("GET", "/v1/webhooks", what="list webhooks"))["items"]))
        return 0
    path = f"/v1/webhooks/{args.endpoint_id}"
    if action == "deliveries":
        page = await api.request("GET", f"{path}/deliveries", what="list deliveries",
                                 params={"status": args.status, "page_size": max(1, min(args.limit, 100))})
        out.print(_deliveries_table(page["items"]) if page["items"] else "no deliveries")
        return 0
    if action == "rotate-secret":
        hook = await api.request("POST", f"{path}/rotate-secret", what="rotate the secret")
        out.print(escape(f"new secret (shown once, keep it): {hook['secret']}"))
        out.print(escape(f"the previous secret signs too until {hook['previous_secret_expires_at']}"))
        return 0
    if action == "enable":
        hook = await api.request("POST", f"{path}/enable", what="enable webhook")
        out.print(escape(f"webhook {hook['id']} is {hook['status']}"))
        return 0
    await api.request("DELETE", path, what="delete webhook")
    out.print(escape(f"webhook {args.endpoint_id} deleted"))
    return 0
