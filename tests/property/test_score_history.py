# ruff: noqa: F811 - pytest fixtures (gf_settings) are imported from the shared harness
"""Score history replays to the current scores, for any sequence of gradings, regrades and reviews.

Each example grades a submission (``persist_grading_result``), then applies a random sequence of
reviewer overrides (the review saga's DB step, version-fenced) and regrades (load + persist, keeping
or replacing reviewers' scores). A plain model of the expected scores is kept alongside. After every
sequence, for each question: the history chain is unbroken (each row's ``old`` is the previous row's
``new``, the first ``old`` is null), its last ``new`` is the stored score, the stored score equals
the model's, and the rows' submission versions never decrease.
"""

from __future__ import annotations

import dataclasses
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.testing import ActivityEnvironment

from activities.grading import GradingActivities
from activities.types import PersistInput, SubmissionRef
from infra.stores import review
from tests.integration.workflows.harness import choice, fetch_all, gf_settings, seed  # noqa: F401

QUESTIONS = ("q1", "q2", "q3")
SCORES = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])
HISTORY_SQL = ("SELECT question_id, old_score, new_score, source, submission_version FROM score_history "
               "WHERE submission_id = %s ORDER BY id")
RESULTS_SQL = "SELECT question_id, score FROM grading_results WHERE submission_id = %s"

review_op = st.tuples(st.just("review"), st.dictionaries(st.sampled_from(QUESTIONS), SCORES, min_size=1))
regrade_op = st.tuples(st.just("regrade"), st.fixed_dictionaries({q: SCORES for q in QUESTIONS}), st.booleans())


def _grades(scores: dict[str, float]) -> list[dict]:
    return [{"question_id": q, "score": s, "max_points": 2.0, "confidence": 0.9, "feedback": "", "grader": "choice",
             "rubric_version": 1, "flagged": False} for q, s in scores.items()]


@settings(max_examples=12)
@given(first=st.fixed_dictionaries({q: SCORES for q in QUESTIONS}),
       ops=st.lists(st.one_of(review_op, regrade_op), max_size=6))
async def test_history_replays_to_the_current_scores(pools, gf_settings, tenant_id, first, ops):
    s = await seed(pools, tenant_id, [choice(q) for q in QUESTIONS], {})
    acts = GradingActivities(pools, gf_settings)
    model = dict(first)
    reviewed: set[str] = set()

    async def grade(scores: dict[str, float], keep_reviewed: bool) -> None:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, workflow_id=f"grade-{s.submission_id}",
                                       workflow_run_id=str(uuid.uuid4()))
        meta = await env.run(acts.load_grading_context, SubmissionRef(s.submission_id, tenant_id))
        await env.run(acts.persist_grading_result, PersistInput(
            s.submission_id, tenant_id, _grades(scores), sum(scores.values()), 6.0, keep_reviewed=keep_reviewed,
            expected_version=meta.version))

    await grade(first, False)
    for op in ops:
        if op[0] == "review":
            target = await review.load_target(pools, tenant_id, s.submission_id)
            assert target is not None
            await review.apply_override(pools, tenant_id, s.submission_id, actor_id="teacher",
                                        overrides={q: (v, None) for q, v in op[1].items()}, reason="p",
                                        saga_id=str(uuid.uuid4()), expected_version=target.version)
            model.update(op[1])
            reviewed |= set(op[1])
        else:
            _, scores, keep = op
            await grade(scores, keep)
            model.update({q: v for q, v in scores.items() if not (keep and q in reviewed)})
            if not keep:
                reviewed.clear()

    rows = await fetch_all(pools, tenant_id, HISTORY_SQL, (s.submission_id,))
    stored = {r["question_id"]: float(r["score"]) for r in await fetch_all(pools, tenant_id, RESULTS_SQL,
                                                                           (s.submission_id,))}
    assert stored == model
    versions = [r["submission_version"] for r in rows]
    assert versions == sorted(versions)
    for qid in QUESTIONS:
        chain = [r for r in rows if r["question_id"] == qid]
        assert chain[0]["old_score"] is None and chain[0]["source"] == "agent"
        for before, after in zip(chain, chain[1:], strict=False):
            assert float(after["old_score"]) == float(before["new_score"])
            assert float(after["old_score"]) != float(after["new_score"])  # a row is a change
        assert float(chain[-1]["new_score"]) == stored[qid]
