"""Backup retention and the ``gradeflow dlq`` choices, without services."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from infra.cli import build_parser
from infra.db.backup import prune_backups, write_manifest
from infra.events.dead_letters import KINDS, STATUSES

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def _backup(folder: Path, stamp: str, *, ok: bool | None) -> Path:
    dump = folder / f"gradeflow-db-{stamp}.dump"
    dump.write_bytes(b"x")
    (folder / f"{dump.name}.sha256").write_text("x")
    write_manifest(dump, {"verification": None if ok is None else {"ok": ok}})
    return dump


def test_old_backups_go_but_the_newest_verified_one_stays(tmp_path: Path) -> None:
    oldest = _backup(tmp_path, "20261001T023000Z", ok=True)
    old_verified = _backup(tmp_path, "20261015T023000Z", ok=True)
    old_failed = _backup(tmp_path, "20261016T023000Z", ok=False)
    recent_failed = _backup(tmp_path, "20261129T023000Z", ok=False)
    assert prune_backups(tmp_path, 30, now=NOW) == [oldest, old_failed]
    assert old_verified.exists() and recent_failed.exists()  # the newest verified one, however old
    assert not (tmp_path / f"{oldest.name}.sha256").exists() and not (tmp_path / f"{oldest.name}.json").exists()

    newer = _backup(tmp_path, "20261130T023000Z", ok=True)
    assert prune_backups(tmp_path, 30, now=NOW) == [old_verified]
    assert newer.exists() and recent_failed.exists()


def test_nothing_verified_keeps_the_newest(tmp_path: Path) -> None:
    first = _backup(tmp_path, "20260101T023000Z", ok=None)
    last = _backup(tmp_path, "20260102T023000Z", ok=None)
    assert prune_backups(tmp_path, 30, now=NOW) == [first]
    assert last.exists()


def test_dlq_command_choices_match_the_dead_letter_kinds_and_statuses() -> None:
    parser = build_parser()
    args = parser.parse_args(["dlq", "list", "--kind", "submission", "--status", "resolved"])
    assert (args.kind, args.status) == ("submission", "resolved")
    dlq = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("dlq"))  # type: ignore[union-attr]
    listing = dlq._subparsers._group_actions[0].choices["list"]  # type: ignore[union-attr]
    choices = {a.dest: a.choices for a in listing._actions if a.dest in ("kind", "status")}
    assert list(choices["kind"]) == list(KINDS) and list(choices["status"]) == [*STATUSES, "all"]
