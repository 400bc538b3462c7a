"""Keep bearer tokens out of the server's logs.

uvicorn logs every request line with its query string (``uvicorn.access``) and every WebSocket
handshake with its path and query (``uvicorn.error``), so a feed opened with ``?token=<jwt>`` would
put the token in the log. :class:`TokenRedactionFilter` replaces token values in those records'
message and arguments (keeping the arguments' shape, which uvicorn's access formatter relies on):
``token=`` / ``access_token=`` query values, ``Bearer <token>`` and anything shaped like a JWT.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error")
"""Loggers whose records may carry a request's path and query."""

_PATTERNS = (
    (re.compile(r"(?i)([?&](?:access_)?token=)[^&\s\"']*"), rf"\g<1>{REDACTED}"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<1>{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every bearer token replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class TokenRedactionFilter(logging.Filter):
    """Logging filter that redacts tokens in a record's message and arguments (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place."""
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_value(arg) for key, arg in record.args.items()}
        return True


def install_token_redaction(loggers: tuple[str, ...] = LOGGERS) -> None:
    """Attach one :class:`TokenRedactionFilter` to each of ``loggers`` (idempotent)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactionFilter) for f in logger.filters):
            logger.addFilter(TokenRedactionFilter())
