"""``gradeflow dev``'s children: one cognitive worker by default, N on request, each a cognitive poller."""

from __future__ import annotations

from infra.stack.devserver import CHILDREN, children


def test_one_cognitive_worker_by_default() -> None:
    assert children() == CHILDREN


def test_extra_cognitive_workers_follow_the_first() -> None:
    names = [name for name, _ in children(3)]
    assert names == ["api", "worker-orchestration", "worker-cognitive", "worker-cognitive-2",
                     "worker-cognitive-3", "relay"]
    argv = dict(children(3))
    assert argv["worker-cognitive-2"] == argv["worker-cognitive-3"] == ["worker", "--queue", "cognitive"]
