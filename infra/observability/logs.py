"""Log lines of every gradeflow process: text (default) or one JSON object per line.

``GRADEFLOW_LOG_FORMAT=json`` makes every record one line of JSON with ``ts`` (UTC, ISO 8601),
``level``, ``logger``, ``message``, ``trace_id`` and, where known, ``tenant_id`` and
``submission_id`` (from the record's ``extra``, the current baggage or the active span: see
:class:`~infra.observability.tracing.TraceIdFilter`), plus ``exception`` with the traceback and any
other ``extra`` the call passed (e.g. the slow-span alert's ``duration_ms``). Text keeps the
historical format with ``[trace_id=...]``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from infra.observability.tracing import LOG_FORMAT, NO_TRACE, install_log_trace_ids

LogFormat = Literal["text", "json"]

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                                "taskName"}
"""Attributes every record has; anything else on a record came from ``extra``."""
_FIRST = ("trace_id", "tenant_id", "submission_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None) or NO_TRACE,
        }
        for name in _FIRST[1:]:
            value = getattr(record, name, None)
            if value:
                out[name] = str(value)
        for name, value in vars(record).items():
            if name not in _RESERVED and name not in out and name not in _FIRST and not name.startswith("_"):
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(log_format: LogFormat | str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)


def configure_logging(level: str = "INFO", log_format: LogFormat | str = "text", *,
                      stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``log_format``, with trace ids; idempotent.

    Replaces the root logger's handlers with one stream handler. In ``json`` the server's own loggers
    (uvicorn) are pointed at it too, so the process writes nothing but JSON lines.

    Returns:
        The handler (tests read what it wrote).

    """
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    install_log_trace_ids([handler])
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            server_logger = logging.getLogger(name)
            server_logger.handlers.clear()
            server_logger.propagate = True
    return handler
