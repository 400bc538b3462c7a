r"""Text and numbers that can be stored: the checks every value from outside passes at the edge.

PostgreSQL ``text`` and ``jsonb`` cannot hold NUL (U+0000), and UTF-8 cannot encode a lone UTF-16
surrogate (U+D800..U+DFFF, which a JSON ``"\udc00"`` escape produces): either fails deep inside a
write. The API refuses them where they enter, naming the field, with the pydantic types below:

- :data:`StoredText`: free text (answers, prompts, feedback, reasons): no NUL, no lone surrogate.
- :data:`Label`: one-line names and ids (student ids, question ids, titles): also no control
  characters (tab, newline, ESC, ...).
- :data:`FiniteFloat`: a float that is neither NaN nor infinite (``1e309`` parses as infinity).

:func:`canonical_uuid` turns every spelling of a UUID that :class:`uuid.UUID` accepts (upper case,
braces, ``urn:uuid:``, no hyphens) into the one spelling used for keys, events, locks and SQL.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, Field

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NOT_A_LABEL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str, *, label: bool = False) -> str | None:
    """Why ``value`` cannot be stored, or ``None`` when it can.

    Args:
        value: the text.
        label: also refuse control characters (one-line names and ids).

    """
    match = (_NOT_A_LABEL if label else _UNSTORABLE).search(value)
    if match is None:
        return None
    code = ord(match.group())
    if code == 0:
        what = "a NUL character"
    elif 0xD800 <= code <= 0xDFFF:
        what = f"a lone UTF-16 surrogate (U+{code:04X})"
    else:
        what = f"a control character (U+{code:04X})"
    return f"must not contain {what} (at position {match.start()})"


def _stored_text(value: str) -> str:
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value


def _label(value: str) -> str:
    if (problem := text_problem(value, label=True)) is not None:
        raise ValueError(problem)
    return value


StoredText = Annotated[str, AfterValidator(_stored_text)]
"""Free text PostgreSQL can store (no NUL, no lone surrogate); add length bounds with ``Field``."""
Label = Annotated[str, AfterValidator(_label)]
"""A one-line name or id: storable and without control characters; add length bounds with ``Field``."""
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is neither NaN nor infinite."""


def json_text_problems(value: Any, *, max_depth: int = 32) -> Iterator[tuple[str, str]]:
    """Yield ``(path, problem)`` for every unstorable string (or object key) inside a JSON value.

    Args:
        value: a decoded JSON value.
        max_depth: deeper nesting is itself a problem (no answer nests that deep).

    """
    pending: list[tuple[str, Any, int]] = [("", value, 0)]
    while pending:
        path, item, depth = pending.pop()
        if depth > max_depth:
            yield path, f"nests deeper than {max_depth} levels"
            continue
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                yield path, problem
        elif isinstance(item, float) and not math.isfinite(item):
            yield path, "must be a finite number"
        elif isinstance(item, dict):
            for key, child in item.items():
                if (problem := text_problem(str(key))) is not None:
                    yield path, f"key {key!r} {problem}"
                    continue
                pending.append((f"{path}.{key}" if path else str(key), child, depth + 1))
        elif isinstance(item, list):
            pending.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(item))


def canonical_uuid(value: str) -> str:
    """The canonical spelling (lower case, hyphenated) of a UUID in any spelling :class:`uuid.UUID` accepts.

    Raises:
        ValueError: ``value`` is not a UUID.

    """
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError):
        raise ValueError("must be a UUID, e.g. 123e4567-e89b-12d3-a456-426614174000") from None
