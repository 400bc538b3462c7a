"""The chaos run's table (plain aligned text) and its JSON file under ``bench/results/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Getter = Callable[[dict[str, Any]], Any]

COLUMNS: list[tuple[str, Getter, str | None]] = [
    ("subs", lambda r: r["submissions"]["submissions"], None),
    ("final", lambda r: r["submissions"]["final"], "final"),
    ("interv", lambda r: r["submissions"]["needs_intervention"], "no_intervention"),
    ("res≠Q", lambda r: r["submissions"]["results_bad"], "one_result_per_question"),
    ("dups", lambda r: r["submissions"]["duplicates"], "no_duplicates"),
    ("faults", lambda r: len(r["regrade"]["per_fault"]), None),
    ("inflight", lambda r: r["regrade"]["in_flight"], None),
    ("regraded", lambda r: r["regrade"]["regraded"] + r["regrade"]["unattributed"], "regraded_within_in_flight"),
    ("rg∈ckpt", lambda r: r["regrade"]["regraded_checkpointed"], "regraded_within_in_flight"),
    ("calls≠Q", lambda r: r["regrade"]["call_rows"]["rows_bad"], "one_call_row_per_question"),
    ("lateckpt", lambda r: r["regrade"]["late_checkpoint"], "checkpoint_lag"),
    ("events", lambda r: r["events"]["events"], None),
    ("unpub", lambda r: r["events"]["unpublished"], "events_in_stream"),
    ("missing", lambda r: r["events"]["missing_from_stream"], "events_in_stream"),
    ("conflict", lambda r: r["events"]["payload_conflicts"], "event_payloads"),
    ("graded×2", lambda r: r["events"]["graded_event_dups"], "graded_event_once"),
    ("stale", lambda r: r["copies"]["stale_copies"], "no_stale_copy"),
    ("api≠pg", lambda r: r["copies"]["api_disagrees"], "no_stale_copy"),
    ("5xx", lambda r: r["http"]["server_errors"], "no_500"),
    ("503", lambda r: r["http"]["503"], None),
]
"""(header, figure, check it feeds): a cell whose check failed is marked with ``!``."""

LEGEND = """\
subs: submissions in PostgreSQL · final: completed/needs_review · interv: needs_intervention · res≠Q: submissions
whose result rows ≠ one per question (final) or ≠ 0 (not final) · dups: a second submission for one key/student ·
faults: fault instants (kills, outages) · inflight: questions started and not checkpointed at those instants ·
regraded: questions graded again, from the worker's grader log (check: ≤ inflight at each instant, none without a
fault) · rg∈ckpt: graded again although already in the checkpoint · calls≠Q: submissions whose grader_calls rows ≠
one per question · lateckpt: returned > lag s before an instant, still not checkpointed ·
events: outbox events · unpub: not published (pending/failed) · missing: not in the tenant Stream · conflict: event id
with two different payloads · graded×2: extra submission.graded events · stale: Redis copies ≠ PostgreSQL ·
api≠pg: GET /v1/submissions/{id} ≠ PostgreSQL · 5xx: 5xx answers other than 503 · 503: 503 answers (allowed)"""


def _row(result: dict[str, Any]) -> list[str]:
    if "checks" not in result:
        lines = [line.strip() for line in str(result.get("error", "?")).splitlines() if line.strip()]
        summary = lines[0] + (f" … {lines[-1]}" if len(lines) > 1 else "")
        return [result["scenario"]] + ["-"] * len(COLUMNS) + [f"ERROR: {summary[:200]}"]
    cells = [result["scenario"]]
    for _header, get, check in COLUMNS:
        value = get(result)
        failed = check is not None and not result["checks"].get(check, True) and value not in (0, None)
        cells.append(f"{value}{'!' if failed else ''}")
    failed_checks = [name for name, ok in result["checks"].items() if not ok]
    cells.append("PASS" if result["ok"] else "FAIL: " + ", ".join(failed_checks))
    return cells


def table(results: list[dict[str, Any]]) -> str:
    """One aligned text table of every scenario's figures, then the legend."""
    rows = [["scenario", *(h for h, _g, _c in COLUMNS), "verdict"], *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join(cells) + "  " + row[-1])
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n\n" + LEGEND


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write the run's report (figures, checks, timelines, params, machine) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
