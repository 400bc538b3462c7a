"""``gradeflow exams export ID [--format csv|jsonl] [--feedback] [-o FILE]``: download an exam's gradebook.

The body is streamed to the file (or stdout) as it arrives. With ``-o FILE`` it is written to
``FILE.part`` and renamed to ``FILE`` only once complete, so a broken download never leaves a
truncated file under the name asked for.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from infra.client.http import ApiClient, ClientError

FORMATS = ("csv", "jsonl")


async def export_grades(api: ApiClient, args: argparse.Namespace) -> int:
    """Download ``GET /v1/exams/{id}/grades.<format>`` to ``args.output`` (``None`` or ``-``: stdout)."""
    path = f"/v1/exams/{args.exam_id}/grades.{args.format}"
    params = {"feedback": "true"} if args.feedback else None
    what = f"export exam {args.exam_id}"
    if args.output in (None, "-"):
        try:
            await api.download(path, sys.stdout.buffer, what=what, params=params)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader stopped (`| head`): what it wanted is out, not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    target = Path(args.output)
    part = target.with_name(target.name + ".part")
    try:
        sink = part.open("wb")
    except OSError as exc:
        raise ClientError(f"-o {args.output}: cannot write it ({exc.strerror or exc})") from None
    try:
        with sink:
            written = await api.download(path, sink, what=what, params=params)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    print(f"wrote {written} bytes to {target}", file=sys.stderr)
    return 0
