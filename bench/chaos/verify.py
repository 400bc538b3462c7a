"""The checks of a chaos scenario, computed from PostgreSQL (superuser), Redis and the API.

Figures (all counts) and the check each one feeds:

- ``final``: every accepted submission is ``completed`` or ``needs_review`` (none lost, none stuck);
  ``needs_intervention`` counted on its own (``no_intervention``).
- ``one_result_per_question``: a final submission has exactly one ``grading_results`` row per question,
  a non-final one none (results and status commit together).
- ``no_duplicates``: one submission per Idempotency-Key / student (the client posts each student once).
- ``regraded_within_in_flight``: per fault instant, questions graded again ≤ questions in flight, none
  of them already in the checkpoint, and no question graded twice without a fault before it. See
  :func:`regrade_figures` for the definitions.
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
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from bench.chaos.load import Http, Posted
from bench.chaos.snapshots import FINAL_STATUSES, Db, FaultSnapshot
from infra.cache.keys import events_stream, submission_key

SUBMISSIONS_SQL = """
SELECT s.id::text AS id, s.student_id, s.status, s.version, s.total, s.error,
       (SELECT count(*) FROM grading_results r WHERE r.submission_id = s.id) AS results
  FROM submissions s WHERE s.tenant_id = %s"""
CALLS_SQL = """
SELECT submission_id::text AS submission_id, question_id, run_id, attempt, created_at
  FROM grader_calls WHERE tenant_id = %s ORDER BY created_at, id"""
OUTBOX_SQL = """
SELECT event_id::text AS event_id, event_type, target_id, status, payload, attempts
  FROM event_outbox WHERE tenant_id = %s ORDER BY id"""
DLQ_SQL = "SELECT count(*) AS n FROM dlq_items WHERE tenant_id = %s AND status = 'open'"
OUTBOX_PENDING_SQL = "SELECT count(*) AS n FROM event_outbox WHERE tenant_id = %s AND status = 'pending'"


def regrade_figures(calls: list[dict[str, Any]], snaps: list[FaultSnapshot], questions: int,
                    lag_s: float) -> dict[str, Any]:
    """Questions graded again after each fault instant, against the questions in flight at it.

    - A question is *graded again* when it has a ``grader_calls`` row after an earlier one; the extra
      row is charged to the latest fault instant that lies between the first row and it (none: the
      row is ``unattributed``: graded twice with no fault to explain it).
    - *In flight* at an instant: for each submission being graded then, its questions whose grade was
      not in the checkpoint (``questions`` − checkpointed). The API starts gradings without a
      per-run limit, so all of a submission's questions are started at once and the cognitive
      worker runs up to 100 activities at once (Temporal's default): this is the number of questions
      that were started and not yet saved, at most gradings-in-progress × questions.
    - ``regraded_checkpointed``: graded again although its grade was in the checkpoint (must be 0).
    - ``late_checkpoint`` (fault instants and probes): returned (row written) more than ``lag_s``
      before the instant, after the previous instant or probe, for a submission still grading, yet
      not in its checkpoint.
    """
    snaps = sorted(snaps, key=lambda snap: snap.at)
    faults = [snap for snap in snaps if snap.kind == "fault"]
    first: dict[tuple[str, str], Any] = {}
    regraded = Counter[int]()
    in_ckpt = Counter[int]()
    unattributed = 0
    for row in calls:
        pair = (row["submission_id"], row["question_id"])
        if pair not in first:
            first[pair] = row["created_at"]
            continue
        owner = None
        for k, snap in enumerate(faults):
            if first[pair] < snap.at < row["created_at"]:
                owner = k
        if owner is None:
            unattributed += 1
            continue
        regraded[owner] += 1
        in_ckpt[owner] += pair[1] in faults[owner].checkpointed.get(pair[0], set())
    exposed: dict[int, int] = {}
    late: dict[int, int] = {}
    for k, snap in enumerate(snaps):
        since = snaps[k - 1].at if k else None
        grading = set(snap.grading)
        rows = [r for r in calls
                if r["submission_id"] in grading and r["created_at"] < snap.at
                and (since is None or r["created_at"] > since)
                and r["question_id"] not in snap.checkpointed.get(r["submission_id"], set())]
        exposed[id(snap)] = len({(r["submission_id"], r["question_id"]) for r in rows})
        late[id(snap)] = len({(r["submission_id"], r["question_id"]) for r in rows
                              if r["created_at"] < snap.at - timedelta(seconds=lag_s)})
    per_fault = []
    for k, snap in enumerate(faults):
        in_flight = sum(questions - len(snap.checkpointed.get(s, set())) for s in snap.grading)
        per_fault.append({**snap.to_json(), "in_flight": in_flight, "returned_not_checkpointed": exposed[id(snap)],
                          "regraded": regraded[k], "regraded_checkpointed": in_ckpt[k],
                          "late_checkpoint": late[id(snap)]})
    probes = [snap for snap in snaps if snap.kind == "probe"]
    return {
        "grader_calls": len(calls), "questions_graded": len(first),
        "calls_by_attempt": dict(sorted(Counter(int(r["attempt"]) for r in calls).items())),
        "extra_calls": len(calls) - len(first), "unattributed": unattributed,
        "in_flight": sum(f["in_flight"] for f in per_fault),
        "regraded": sum(f["regraded"] for f in per_fault),
        "regraded_checkpointed": sum(f["regraded_checkpointed"] for f in per_fault),
        "late_checkpoint": sum(late.values()),
        "over_bound": sum(f["regraded"] > f["in_flight"] for f in per_fault),
        "probes": len(probes), "late_checkpoint_at_probes": sum(late[id(p)] for p in probes),
        "per_fault": per_fault,
    }


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
                 extra_accepted: list[str], snaps: list[FaultSnapshot], lag_s: float) -> dict[str, Any]:
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
    regrade = regrade_figures(await db.fetch(CALLS_SQL, (tenant,)), snaps, questions, lag_s)
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
        "events_in_stream": events["missing_from_stream"] == 0 and events["unpublished"] == 0,
        "event_payloads": events["payload_conflicts"] == 0,
        "graded_event_once": events["graded_event_dups"] == 0,
        "no_stale_copy": copies["stale_copies"] == 0 and copies["api_disagrees"] == 0,
        "no_500": http_fig["server_errors"] == 0,
    }
    return {"submissions": subs, "regrade": regrade, "events": events, "copies": copies, "http": http_fig,
            "checks": checks}
