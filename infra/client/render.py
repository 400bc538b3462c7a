"""Rich output of the client commands: result, submission and exam tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

PIPE_WIDTH = 160
"""Width of the output when stdout is not a terminal (rich would pick 80 and fold the ids)."""
STATUS_STYLES = {"completed": "green", "needs_review": "yellow", "failed": "red", "needs_intervention": "red",
                 "grading": "cyan", "queued": "dim"}


def console() -> Console:
    """A console on stdout, wide enough for ids when piped."""
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=PIPE_WIDTH)
    return out


def _status(status: str | None) -> str:
    style = STATUS_STYLES.get(status or "", "")
    return f"[{style}]{status}[/]" if style else str(status)


def _points(value: Any) -> str:
    return "-" if value is None else f"{round(float(value), 2):g}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def exam_line(exam: dict[str, Any]) -> str:
    """One line about a created exam."""
    return escape(f"exam {exam['id']} created: {exam['title']!r} ({len(exam.get('questions', []))} questions)")


def print_result(out: Console, view: dict[str, Any]) -> None:
    """A submission's header line, then :func:`result_table`."""
    out.print(f"submission {view['id']} · student {escape(str(view['student_id']))} · {_status(view['status'])} · "
              f"total {_points(view.get('total'))} / {_points(view.get('max_total'))}")
    out.print(result_table(view))


def result_table(view: dict[str, Any]) -> Table:
    """One row per question of a submission: score, confidence, grader, flags and feedback."""
    table = Table()
    for name, justify in (("question", "left"), ("score", "right"), ("max", "right"), ("confidence", "right"),
                          ("grader", "left"), ("flags", "left"), ("feedback", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in view.get("results") or []:
        flags = ", ".join(f for f, on in (("flagged", r.get("flagged")), ("overridden", r.get("overridden"))) if on)
        table.add_row(escape(r["question_id"]), _points(r["score"]), _points(r["max_points"]),
                      f"{r['confidence']:.2f}", escape(r.get("grader", "")), flags,
                      escape(_shorten(r.get("feedback") or "", 160)))
    return table


def submissions_table(items: list[dict[str, Any]]) -> Table:
    """One row per submission of a listing page."""
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("student", "status", "total", "exam", "updated"):
        table.add_column(name, justify="right" if name == "total" else "left")
    for s in items:
        total = f"{_points(s.get('total'))} / {_points(s.get('max_total'))}"
        table.add_row(str(s.get("id")), escape(str(s.get("student_id"))), _status(s.get("status")), total,
                      str(s.get("exam_id")), str(s.get("updated_at") or "")[:19])
    return table


def exams_table(items: list[dict[str, Any]]) -> Table:
    """One row per exam of a listing page."""
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("title")
    table.add_column("created")
    for e in items:
        table.add_row(str(e.get("id")), escape(str(e.get("title"))), str(e.get("created_at") or "")[:19])
    return table
