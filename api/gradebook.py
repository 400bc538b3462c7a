"""CSV and JSON Lines renderings of the gradebook (:mod:`infra.stores.gradebook`), chunk by chunk.

CSV (RFC 4180, written by :mod:`csv`: CRLF line ends, a field holding a comma, a quote, CR or LF is
quoted and its quotes doubled; UTF-8, no BOM). Columns: ``submission_id, student_id, external_id,
status``, one per question (its id, in exam order; with ``feedback``, each followed by
``<id>_feedback``), then ``total, max_total, graded_at``. An empty cell is a missing value.

Formula injection (OWASP "CSV Injection"): a TEXT cell (ids, question ids in the header, feedback)
that starts with ``=``, ``+``, ``-``, ``@``, TAB or CR gets a leading ``'``, so no spreadsheet reads it
as a formula. A text cell starting with ``'`` gets one too, which makes the rule reversible: removing
one leading ``'`` from every text cell that has one gives back the stored text exactly. NUMBERS are
written as PostgreSQL writes a ``numeric`` (a plain decimal, never an exponent) and are never prefixed: a
number is not a formula, and a negative score (none can be stored today) stays a number. Times are
ISO 8601 with their UTC offset.

JSON Lines: one JSON object per submission with the same fields, ``scores`` (and ``feedback``) as an
object keyed by question id in exam order, ``null`` for a missing value. Numbers are written exactly
as stored (no float rounding). No prefixing: JSON is not opened as a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing

from infra.stores.gradebook import GradebookHeader, GradebookRow

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection)."""
ESCAPE = "'"
"""Prefix of an escaped text cell (also given to text that starts with it, to stay reversible)."""
_ESCAPED_STARTS = (*FORMULA_PREFIXES, ESCAPE)
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
JSONL_MEDIA_TYPE = "application/x-ndjson"
GradebookBatches = AsyncGenerator[GradebookHeader | list[GradebookRow], None]
"""What :func:`infra.stores.gradebook.gradebook` yields after its header."""


def safe_text(value: str) -> str:
    """A text cell a spreadsheet shows as text: ``'`` before a formula prefix (or a leading ``'``)."""
    return ESCAPE + value if value.startswith(_ESCAPED_STARTS) else value


def unescape_text(cell: str) -> str:
    """The stored text of a :func:`safe_text` cell (what a reader of the CSV does to get it back)."""
    return cell[1:] if cell.startswith(ESCAPE) else cell


def number(value: str | None) -> str:
    """A number (PostgreSQL's numeral of a ``numeric``: plain decimal) as it is (``""`` for none); never prefixed."""
    return "" if value is None else value


def _opt_text(value: str | None) -> str:
    return "" if value is None else safe_text(value)


def csv_header(questions: list[str], *, feedback: bool) -> list[str]:
    """The CSV header row (question ids escaped like any text)."""
    columns = ["submission_id", "student_id", "external_id", "status"]
    for qid in questions:
        columns.append(safe_text(qid))
        if feedback:
            columns.append(safe_text(f"{qid}_feedback"))
    return [*columns, "total", "max_total", "graded_at"]


def csv_row(row: GradebookRow) -> list[str]:
    """One submission as CSV cells (see the module docstring for the escaping)."""
    cells = [row.submission_id, safe_text(row.student_id), _opt_text(row.external_id), row.status]
    if row.feedback is None:
        cells.extend(number(s) for s in row.scores)
    else:
        for score, text in zip(row.scores, row.feedback, strict=True):
            cells.append(number(score))
            cells.append(_opt_text(text))
    cells += [number(row.total), number(row.max_total), row.graded_at or ""]
    return cells


def _json_number(value: str | None) -> str:
    return "null" if value is None else value


_dumps = json.JSONEncoder(ensure_ascii=False).encode
"""A JSON string (UTF-8 as it is; the C encoder)."""


class JsonLines:
    """Writes gradebook rows as JSON Lines; the keys of an export's question objects are encoded once.

    Args:
        questions: the export's question ids, in exam order.

    """

    def __init__(self, questions: list[str]) -> None:
        self._keys = [_dumps(q) + ":" for q in questions]

    def _object(self, values: Iterable[str]) -> str:
        return "{" + ",".join(k + v for k, v in zip(self._keys, values, strict=True)) + "}"

    def line(self, row: GradebookRow) -> str:
        """One submission as a JSON object (numbers verbatim) and a newline."""
        feedback = "" if row.feedback is None else (
            ',"feedback":' + self._object(map(_dumps, row.feedback)))
        return (f'{{"submission_id":{_dumps(row.submission_id)},"student_id":{_dumps(row.student_id)},'
                f'"external_id":{_dumps(row.external_id)},"status":{_dumps(row.status)},'
                f'"scores":{self._object(map(_json_number, row.scores))}{feedback},'
                f'"total":{_json_number(row.total)},"max_total":{_json_number(row.max_total)},'
                f'"graded_at":{_dumps(row.graded_at)}}}\n')


async def render_csv(header: GradebookHeader, batches: GradebookBatches, *,
                     feedback: bool) -> AsyncIterator[bytes]:
    """The CSV document: the header row, then one chunk per batch of rows; closes ``batches`` at the end."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(csv_header(header.questions, feedback=feedback))
    yield buf.getvalue().encode()
    async with aclosing(batches):
        async for batch in batches:
            if isinstance(batch, GradebookHeader):
                continue
            buf.seek(0)
            buf.truncate()
            writer.writerows(map(csv_row, batch))
            yield buf.getvalue().encode()


async def render_jsonl(header: GradebookHeader,
                       batches: GradebookBatches) -> AsyncIterator[bytes]:
    """The JSON Lines document, one chunk per batch of rows; closes ``batches`` at the end."""
    line = JsonLines(header.questions).line
    async with aclosing(batches):
        async for batch in batches:
            if isinstance(batch, GradebookHeader):
                continue
            yield "".join(map(line, batch)).encode()
