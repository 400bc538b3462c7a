"""``gradeflow watch ID``: a submission's grading followed on its live feed, then its result table.

The feed (``WS /v1/ws/submissions/{id}?token=...``) sends a snapshot of the submission, then
``grading.progress`` messages (questions graded of the total, the ids graded so far, the graph node
that finished) and status changes. The watch draws an overall bar and a bar per question of the exam
(``GET /v1/exams/{id}``), each filled when its question is graded, and prints a line per graded
question. Between messages the submission is read over HTTP every few seconds, so a feed without live
events (Redis down: close 1011) or a missed message still ends the watch when grading ends.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from infra.client.http import EXIT_SERVER, EXIT_USER, ApiClient, ClientError
from infra.client.render import console, print_result

SETTLED = frozenset({"completed", "needs_review", "failed", "needs_intervention"})
"""Statuses after which grading does not go on by itself."""
FAILED = frozenset({"failed", "needs_intervention"})
POLL_SECONDS = 3.0
"""Longest wait for a feed message before the submission is read over HTTP."""
REFUSALS = {4401: "the token is missing, invalid or expired (check --token / GRADEFLOW_TOKEN)",
            4403: "the token may not follow this feed (check --token / GRADEFLOW_TOKEN)",
            4404: "no such submission for this token", 4429: "too many live feeds open for this tenant"}


def _message(raw: str | bytes) -> tuple[str, dict[str, Any]]:
    try:
        msg = json.loads(raw)
    except ValueError:
        return "", {}
    if not isinstance(msg, dict):
        return "", {}
    payload = msg.get("payload") if msg.get("payload") is not None else msg.get("data")
    return str(msg.get("event_type") or msg.get("type") or ""), payload if isinstance(payload, dict) else {}


class _Bars:
    """The overall bar and one bar per question, filled from ``grading.progress`` messages."""

    def __init__(self, progress: Progress, question_ids: list[str]) -> None:
        self.progress = progress
        self.overall = progress.add_task("waiting", total=len(question_ids) or None)
        self.questions: dict[str, TaskID] = {}
        self.graded: set[str] = set()
        for qid in question_ids:
            self._bar(qid)

    def _bar(self, qid: str) -> TaskID:
        if qid not in self.questions:
            self.questions[qid] = self.progress.add_task(f"  {escape(qid)}", total=1)
        return self.questions[qid]

    def describe(self, text: str) -> None:
        self.progress.update(self.overall, description=text)

    def mark_graded(self, question_ids: list[str], total: Any) -> list[str]:
        """Fill the bars of ``question_ids``; return those not seen graded before, in order."""
        new = [str(q) for q in question_ids if str(q) not in self.graded]
        for qid in new:
            self.graded.add(qid)
            self.progress.update(self._bar(qid), completed=1, description=f"  {escape(qid)} graded")
        total = total if isinstance(total, int) and total > 0 else (len(self.questions) or None)
        self.progress.update(self.overall, total=total, completed=len(self.graded))
        return new


async def _question_ids(api: ApiClient, view: dict[str, Any]) -> list[str]:
    """The exam's question ids in order (no bars up front if the exam cannot be read)."""
    try:
        exam = await api.request("GET", f"/v1/exams/{view['exam_id']}", what=f"watch {view['id']}")
    except ClientError:
        return []
    return [str(q["id"]) for q in exam.get("questions") or [] if isinstance(q, dict) and q.get("id")]


async def _follow(api: ApiClient, submission_id: str, deadline: float, bars: _Bars) -> str:
    """Follow the feed until the submission settles; return its status."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

    loop = asyncio.get_running_loop()
    say = bars.progress.console.print
    status, done = "", -1
    try:
        async with connect(api.ws_url(f"/v1/ws/submissions/{submission_id}"), open_timeout=10,
                           max_size=None) as ws:
            while status not in SETTLED:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return status
                try:
                    raw = await asyncio.wait_for(ws.recv(), min(POLL_SECONDS, remaining))
                except TimeoutError:
                    status = (await _read(api, submission_id))["status"]
                    continue
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else None
                    if code in REFUSALS:
                        raise ClientError(f"watch {submission_id}: {REFUSALS[code]}", EXIT_USER) from None
                    return await _poll(api, submission_id, deadline)  # e.g. 1011: no live events
                kind, payload = _message(raw)
                if kind == "grading.progress":
                    total, now_done = payload.get("questions_total"), int(payload.get("questions_done") or 0)
                    node = payload.get("current_node") or ""
                    bars.describe(f"grading{' · ' + escape(node) if node else ''}")
                    graded = payload.get("graded_questions")
                    if isinstance(graded, list):
                        new = bars.mark_graded(graded, total)
                        for n, qid in enumerate(new, len(bars.graded) - len(new) + 1):
                            say(f"  {escape(qid)} graded ({n}/{total})", highlight=False)
                    else:  # a worker that does not name the questions: the count only
                        bars.progress.update(bars.overall, total=total, completed=now_done)
                        if now_done != done:
                            say(f"  {now_done}/{total} questions graded", highlight=False)
                    done = now_done
                elif payload.get("status"):
                    if payload["status"] != status:
                        say(f"  status {payload['status']}", highlight=False)
                    status = payload["status"]
                    bars.describe(escape(status))
                    results = payload.get("results")
                    if status in SETTLED and isinstance(results, list) and results:
                        bars.mark_graded([r["question_id"] for r in results if isinstance(r, dict)
                                          and r.get("question_id")], len(results))  # settled before we came
    except InvalidStatus as exc:
        raise ClientError(f"watch {submission_id}: the live feed was refused "
                          f"({exc.response.status_code})", EXIT_USER) from None
    except (OSError, WebSocketException) as exc:
        raise ClientError(f"watch {submission_id}: cannot open the live feed at {api.target.base_url} ({exc}); "
                          f"check {api.target.check_hint}") from None
    return status


async def _read(api: ApiClient, submission_id: str) -> dict[str, Any]:
    view: dict[str, Any] = await api.request("GET", f"/v1/submissions/{submission_id}",
                                             what=f"watch {submission_id}")
    return view


async def _poll(api: ApiClient, submission_id: str, deadline: float) -> str:
    loop = asyncio.get_running_loop()
    while True:
        status: str = (await _read(api, submission_id))["status"]
        if status in SETTLED or loop.time() >= deadline:
            return status
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - loop.time())))


async def watch(api: ApiClient, submission_id: str, *, timeout: float, quiet: bool = False) -> int:
    """Follow ``submission_id`` until its grading settles (or ``timeout`` seconds), then print its results.

    Returns:
        0 when it ends ``completed`` or ``needs_review``; 1 when it ended ``failed`` or
        ``needs_intervention`` or is still grading at the timeout.

    """
    first = await _read(api, submission_id)  # a wrong id, token or URL is one clear line before any feed
    question_ids = await _question_ids(api, first)
    out = console()
    deadline = asyncio.get_running_loop().time() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False, disable=quiet) as progress:
        await _follow(api, submission_id, deadline, _Bars(progress, question_ids))
    view = await _read(api, submission_id)
    print_result(out, view)
    if view["status"] not in SETTLED:
        raise ClientError(f"watch {submission_id}: still {view['status']} after {timeout:g}s (--timeout)",
                          EXIT_SERVER)
    if view["status"] in FAILED:
        print(f"gradeflow: submission {submission_id} {view['status']}: {view.get('error') or 'no error recorded'}",
              file=sys.stderr)
        return EXIT_SERVER
    return 0
