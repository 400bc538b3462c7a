"""The checks of a chaos scenario, computed from PostgreSQL (superuser), Redis and the API.

Figures (all counts) and the check each one feeds:

- ``final``: every accepted submission is ``completed`` or ``needs_review`` (none lost, none stuck);
  ``needs_intervention`` counted on its own (``no_intervention``).
- ``one_result_per_question``: a final submission has exactly one ``grading_results`` row per question,
  a non-final one none (results and status commit together).
- ``no_duplicates``: one submission per Idempotency-Key / student (the client posts each student once).
- ``regraded_within_in_flight``: per fault instant, questions graded again ≤ questions in flight, none
  of them already in the checkpoint, and no question graded twice without a fault before it, counted
  from the worker's grader log (``GRADEFLOW_TEST_GRADER_LOG``). See :func:`regrade_figures`.
- ``one_call_row_per_question``: at the end, exactly one ``grader_calls`` row per question of each
  final submission, and never two for one question (rows are recorded with the checkpoint).
- ``checkpoint_lag``: at each fault instant, no question returned more than ``checkpoint_lag`` seconds
  earlier (and since the previous instant) is missing from its checkpoint.
- ``events_in_stream``: every outbox event of the tenant is published and in the tenant's Redis Stream.
- ``event_payloads``: no event id with two different payloads (Stream entries vs each other and the outbox).
- ``graded_event_once``: one ``submission.graded`` event per submission (a re-run emits the same id).
- ``no_stale_copy``: every Redis hot copy agrees with PostgreSQL (status, version, total, result
  count), and so does ``GET /v1/submissions/{id}``.
- ``no_500``: no 5xx other than 503 on any request the suite made.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import redis.asyncio as aioredis

from bench.chaos.load import Http, Posted
from bench.chaos.snapshots import FINAL_STATUSES, Db, FaultSnapshot, GraderCall, GraderLog
from infra.cache.keys import events_stream, submission_key

SUBMISSIONS_SQL = """
SELECT s.id::text AS id, s.student_id, s.status, s.version, s.total, s.error,
       (SELECT count(*) FROM grading_results r WHERE r.submission_id = s.id) AS results
  FROM submissions s WHERE s.tenant_id = %s"""
CALLS_SQL = """
SELECT submission_id::text AS submission_id, question_id, run_id, attempt, created_at
  FROM grader_calls WHERE tenant_id = %s ORDER BY created_at, id"""
"""The recorded grader calls (written with their grade's checkpoint): one row per question at the end."""
OUTBOX_SQL = """
SELECT event_id::text AS event_id, event_type, target_id, status, payload, attempts
  FROM event_outbox WHERE tenant_id = %s ORDER BY id"""
DLQ_SQL = "SELECT count(*) AS n FROM dlq_items WHERE tenant_id = %s AND status = 'open'"
COGNITIVE = "worker-cognitive"
"""Platform process that runs the grading agent."""
OUTBOX_PENDING_SQL = "SELECT count(*) AS n FROM event_outbox WHERE tenant_id = %s AND status = 'pending'"


def regrade_figures(calls: list[GraderCall], snaps: list[FaultSnapshot], questions: int,
                    lag_s: float, grade_delay: float = 0.0,
                    store_down: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """Questions graded again after each fault instant, against the questions in flight at it.

    ``calls``: the grader log's lines (one per grader call, written before its checkpoint, so a
    grade lost with a killed worker still has its line); their unix times are compared with each
    instant's ``wall`` (``time.time()`` at the instant). The worker writes a line at the grader call,
    then sleeps ``GRADEFLOW_DEMO_GRADER_DELAY_SECONDS``: the grade is *returned* (to the agent, which then
    checkpoints it) ``grade_delay`` s after its line, unless the cognitive worker was killed in between
    (the grade never came back: it is only in flight, then graded again).

    - A question is *graded again* when it has a grader log line after an earlier one; the extra
      line is charged to the latest fault instant that lies between the first line and it (none: the
      line is ``unattributed``: graded twice with no fault to explain it).
    - *In flight* at an instant: for each submission being graded then, its questions whose grade was
      not in the checkpoint (``questions`` − checkpointed). The API starts gradings without a
      per-run limit, so all of a submission's questions are started at once and the cognitive
      worker runs up to 100 activities at once (Temporal's default): this is the number of questions
      that were started and not yet saved, at most gradings-in-progress × questions.
    - ``regraded_checkpointed``: graded again although its grade was in the checkpoint (must be 0).
    - ``late_checkpoint`` (fault instants and probes): returned more than ``lag_s``
      before the instant, after the previous instant or probe, for a submission still grading, yet
      not in its checkpoint. A grade returned while PostgreSQL was down (``store_down``: unix
      start/end of each outage) cannot be saved before it is back: it counts as returned at the
      outage's end (then it has ``lag_s`` like any other).
    """
    outages = sorted(store_down or [])

    def saveable_at(returned: float) -> float:
        return next((end for start, end in outages if start <= returned <= end), returned)

    snaps = sorted(snaps, key=lambda snap: snap.wall)
    faults = [snap for snap in snaps if snap.kind == "fault"]
    first: dict[tuple[str, str], float] = {}
    regraded = Counter[int]()
    in_ckpt = Counter[int]()
    unattributed = 0
    for call in calls:
        pair = (call.submission_id, call.question_id)
        if pair not in first:
            first[pair] = call.at
            continue
        owner = None
        for k, snap in enumerate(faults):
            if first[pair] < snap.wall < call.at:
                owner = k
        if owner is None:
            unattributed += 1
            continue
        regraded[owner] += 1
        in_ckpt[owner] += pair[1] in faults[owner].checkpointed.get(pair[0], set())
    kills = [snap.wall for snap in faults if snap.killed == COGNITIVE]
    returned_calls = [c for c in calls if not any(c.at < wall < c.at + grade_delay for wall in kills)]
    exposed: dict[int, int] = {}
    late: dict[int, int] = {}
    for k, snap in enumerate(snaps):
        since = snaps[k - 1].wall if k else None
        grading = set(snap.grading)
        returned = [c for c in returned_calls
                    if c.submission_id in grading and c.at + grade_delay < snap.wall
                    and (since is None or c.at + grade_delay > since)
                    and c.question_id not in snap.checkpointed.get(c.submission_id, set())]
        exposed[id(snap)] = len({(c.submission_id, c.question_id) for c in returned})
        late[id(snap)] = len({(c.submission_id, c.question_id) for c in returned
                                if saveable_at(c.at + grade_delay) < snap.wall - lag_s})
    per_fault = []
    for k, snap in enumerate(faults):
        in_flight = sum(questions - len(snap.checkpointed.get(s, set())) for s in snap.grading)
        per_fault.append({**snap.to_json(), "in_flight": in_flight, "returned_not_checkpointed": exposed[id(snap)],
                          "regraded": regraded[k], "regraded_checkpointed": in_ckpt[k],
                          "late_checkpoint": late[id(snap)]})
    probes = [snap for snap in snaps if snap.kind == "probe"]
    return {
        "grader_calls": len(calls), "questions_graded": len(first),
        "calls_by_attempt": dict(sorted(Counter(c.attempt for c in calls).items())),
        "extra_calls": len(calls) - len(first), "unattributed": unattributed,
        "in_flight": sum(f["in_flight"] for f in per_fault),
        "regraded": sum(f["regraded"] for f in per_fault),
        "regraded_checkpointed": sum(f["regraded_checkpointed"] for f in per_fault),
        "late_checkpoint": sum(late.values()),
        "over_bound": sum(f["regraded"] > f["in_flight"] for f in per_fault),
        "probes": len(probes), "late_checkpoint_at_probes": sum(late[id(p)] for p in probes),
        "per_fault": per_fault,
    }


def call_row_figures(rows: list[dict[str, Any]], submissions: list[dict[str, Any]], questions: int,
                     calls: list[GraderCall], grade_delay: float) -> dict[str, Any]:
    """``grader_calls`` rows at the end: one per question of each submission, recorded with the checkpoint.

    ``rows_bad``: submissions with a question that has several rows, plus final submissions without
    exactly one row for each of their ``questions`` questions. ``row_lag_s``: for each row, its
    ``created_at`` (the checkpoint write of the grade) minus the time its grade was returned (the
    matching grader log line + ``grade_delay``), same host clock: the checkpoint lag, as measured.
    """
    returned = {(c.submission_id, c.question_id, c.attempt): c.at + grade_delay for c in calls}
    lags = sorted(r["created_at"].timestamp() - returned[key] for r in rows
                  if (key := (r["submission_id"], r["question_id"], int(r["attempt"]))) in returned)
    pick = (lambda f: round(lags[min(len(lags) - 1, int(f * len(lags)))], 3)) if lags else (lambda f: None)
    per_pair = Counter((r["submission_id"], r["question_id"]) for r in rows)
    per_sub: dict[str, Counter[str]] = defaultdict(Counter)
    for (sid, qid), n in per_pair.items():
        per_sub[sid][qid] = n
    bad = 0
    for sub in submissions:
        counts = per_sub.get(sub["id"], Counter())
        several = any(n > 1 for n in counts.values())
        bad += several or (sub["status"] in FINAL_STATUSES and len(counts) != questions)
    return {"rows": len(rows), "rows_bad": bad,
            "extra_rows": sum(n - 1 for n in per_pair.values() if n > 1),
            "row_lag_s": {"matched": len(lags), "p50": pick(0.5), "p90": pick(0.9), "max": pick(1.0)}}


async def stream_entries(redis: aioredis.Redis, tenant: str) -> list[tuple[str, dict[str, str]]]:
    """Every entry of the tenant's event Stream, oldest first."""
    out: list[tuple[str, dict[str, str]]] = []
    start = "-"
    while True:
        chunk = await redis.xrange(events_stream(tenant), min=start, max="+", count=500)
        out += chunk[1:] if start != "-" and chunk and chunk[0][0] == start else chunk
        if len(chunk) < 500:
            return out
        start = chunk[-1][0]


def event_figures(outbox: list[dict[str, Any]], entries: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    """Outbox vs Stream: unpublished, missing, duplicated entries, payload conflicts, graded twice."""
    bodies: dict[str, set[str]] = defaultdict(set)
    for _sid, fields in entries:
        bodies[fields.get("event_id", "")].add(fields.get("event", ""))
    conflicts = sum(len(b) > 1 for b in bodies.values())
    for row in outbox:
        for body in bodies.get(row["event_id"], ()):
            try:
                stored = json.loads(body).get("payload")
            except ValueError:
                stored = None
            if json.dumps(stored, sort_keys=True) != json.dumps(row["payload"], sort_keys=True):
                conflicts += 1
                break
    graded = Counter(r["target_id"] for r in outbox if r["event_type"] == "submission.graded")
    return {
        "events": len(outbox),
        "unpublished": sum(r["status"] != "published" for r in outbox),
        "failed": sum(r["status"] == "failed" for r in outbox),
        "missing_from_stream": sum(r["event_id"] not in bodies for r in outbox),
        "stream_entries": len(entries),
        "stream_duplicates": len(entries) - len(bodies),
        "payload_conflicts": conflicts,
        "graded_event_dups": sum(n - 1 for n in graded.values() if n > 1),
    }


def _differs(copy: dict[str, Any], row: dict[str, Any]) -> bool:
    total = None if row["total"] is None else float(row["total"])
    cached_total = copy.get("total")
    return (copy.get("status") != row["status"]
            or ("version" in copy and copy["version"] != row["version"])
            or (cached_total is None) != (total is None)
            or (total is not None and abs(float(cached_total) - total) > 1e-6)
            or len(copy.get("results") or []) != row["results"])


async def copy_figures(redis: aioredis.Redis, http: Http, tenant: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Redis hot copies and API reads that disagree with PostgreSQL."""
    stale, copies, api_stale, samples = 0, 0, 0, []
    for row in rows:
        raw = await redis.get(submission_key(tenant, row["id"]))
        if raw is not None:
            copies += 1
            copy = json.loads(raw)
            if _differs(copy, row):
                stale += 1
                if len(samples) < 5:
                    samples.append({"id": row["id"], "pg": [row["status"], row["version"], row["results"]],
                                    "redis": [copy.get("status"), copy.get("version"),
                                              len(copy.get("results") or [])]})
        resp = await http.request("GET", f"/v1/submissions/{row['id']}")
        if resp is None or resp.status_code != 200 or resp.json().get("status") != row["status"]:
            api_stale += 1
    return {"hot_copies": copies, "stale_copies": stale, "api_disagrees": api_stale, "stale_samples": samples}


async def verify(db: Db, redis_url: str, http: Http, tenant: str, *, questions: int, posted: list[Posted],
                 extra_accepted: list[str], snaps: list[FaultSnapshot], lag_s: float,
                 grader_log: GraderLog, grade_delay: float = 0.0,
                 store_down: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """Compute every figure and check of a scenario (services must be up)."""
    rows = await db.fetch(SUBMISSIONS_SQL, (tenant,))
    by_id = {r["id"]: r for r in rows}
    accepted = {p.submission_id for p in posted if p.submission_id} | set(extra_accepted)
    statuses = Counter(r["status"] for r in rows)
    final = [r for r in rows if r["status"] in FINAL_STATUSES]
    students = Counter(r["student_id"] for r in rows)
    subs: dict[str, Any] = {
        "accepted": len(accepted), "submissions": len(rows), "statuses": dict(statuses),
        "accepted_missing": len(accepted - by_id.keys()),
        "final": len(final), "not_final": len(rows) - len(final) - statuses["needs_intervention"],
        "needs_intervention": statuses["needs_intervention"],
        "intervention_errors": sorted({(r["error"] or "")[:160] for r in rows
                                       if r["status"] == "needs_intervention"})[:5],
        "results_bad": sum((r["results"] != questions) if r["status"] in FINAL_STATUSES else r["results"] > 0
                           for r in rows),
        "duplicates": sum(n - 1 for n in students.values() if n > 1)
                      + sum(len(p.ids_seen) > 1 for p in posted),
    }
    calls = grader_log.calls(set(by_id))
    regrade = regrade_figures(calls, snaps, questions, lag_s, grade_delay, store_down)
    regrade["call_rows"] = call_row_figures(await db.fetch(CALLS_SQL, (tenant,)), rows, questions, calls,
                                            grade_delay)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        events = event_figures(await db.fetch(OUTBOX_SQL, (tenant,)), await stream_entries(redis, tenant))
        copies = await copy_figures(redis, http, tenant, rows)
    finally:
        await redis.aclose()
    events["dlq_open"] = int((await db.fetch(DLQ_SQL, (tenant,)))[0]["n"])
    http_fig = {"codes": dict(sorted(http.codes.items())), "server_errors": http.server_errors(),
                "503": http.codes["503"], "samples": http.samples}
    checks = {
        "final": subs["not_final"] == 0 and subs["accepted_missing"] == 0 and subs["needs_intervention"] == 0,
        "no_intervention": subs["needs_intervention"] == 0,
        "one_result_per_question": subs["results_bad"] == 0,
        "no_duplicates": subs["duplicates"] == 0,
        "regraded_within_in_flight": (regrade["over_bound"] == 0 and regrade["regraded_checkpointed"] == 0
                                      and regrade["unattributed"] == 0),
        "checkpoint_lag": regrade["late_checkpoint"] == 0,
        "one_call_row_per_question": regrade["call_rows"]["rows_bad"] == 0,
        "events_in_stream": events["missing_from_stream"] == 0 and events["unpublished"] == 0,
        "event_payloads": events["payload_conflicts"] == 0,
        "graded_event_once": events["graded_event_dups"] == 0,
        "no_stale_copy": copies["stale_copies"] == 0 and copies["api_disagrees"] == 0,
        "no_500": http_fig["server_errors"] == 0,
    }
    return {"submissions": subs, "regrade": regrade, "events": events, "copies": copies, "http": http_fig,
            "checks": checks}
