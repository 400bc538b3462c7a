"""HTTP load for the chaos suite: submissions with Idempotency-Keys, a prober, duplicate-key storms.

Every request goes through :class:`Http`, which counts answers by status code, so "no 500 during
the fault" is measured on every call the suite makes (posts, reads, progress queries, storms). A 503
(dependency unavailable, with ``Retry-After``) is the documented answer during an outage; a 500 never
is. The exam is :mod:`bench.workload`'s 20 questions, cycled with new ids when more are asked for.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from agents.rubric import Question
from bench.e2e import auth_headers
from bench.workload import answers_for, exam_questions

RETRY_STATUSES = frozenset({409, 429, 502, 503, 504})
"""Answers after which a POST is retried with the same key (409: the first request still runs)."""
MAX_SAMPLES = 20
"""5xx answers kept verbatim for the report."""


def chaos_questions(count: int) -> list[Question]:
    """``count`` questions: the bench workload's 20, cycled with new ids ``q01``…"""
    base = exam_questions()
    out = []
    for i in range(count):
        q = base[i % len(base)]
        out.append(q.model_copy(update={"id": f"q{i + 1:02d}"}))
    return out


@dataclass
class Http:
    """An API client that counts every answer by status (``conn_error`` / ``timeout`` for no answer)."""

    client: httpx.AsyncClient
    t0: float = field(default_factory=time.monotonic)
    codes: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    """The first 5xx answers (other than 503) with time, route and body."""

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """Send one request; ``None`` when no answer came (counted)."""
        try:
            resp = await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            self.codes["timeout"] += 1
            return None
        except httpx.TransportError:
            self.codes["conn_error"] += 1
            return None
        self.codes[str(resp.status_code)] += 1
        if resp.status_code >= 500 and resp.status_code != 503 and len(self.samples) < MAX_SAMPLES:
            self.samples.append({"t": round(time.monotonic() - self.t0, 1), "method": method,
                                 "route": url.split("?")[0], "status": resp.status_code,
                                 "body": resp.text[:300]})
        return resp

    def server_errors(self) -> int:
        """5xx answers other than 503: the "no 500" check (503 + Retry-After is the outage answer)."""
        return sum(n for code, n in self.codes.items() if code.isdigit() and int(code) >= 500 and code != "503")


def open_http(api_url: str, tenant: str) -> Http:
    """An :class:`Http` for ``tenant`` (bench credentials, all roles)."""
    limits = httpx.Limits(max_connections=32)
    client = httpx.AsyncClient(base_url=api_url, headers=auth_headers(tenant), timeout=15.0, limits=limits)
    return Http(client)


async def create_exam(http: Http, questions: list[Question], deadline: float = 60.0) -> str:
    """Create the exam (retrying through an outage); return its id."""
    body = {"title": "chaos exam", "questions": [q.model_dump(mode="json") for q in questions]}
    key = f"exam-{uuid.uuid4()}"
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        resp = await http.request("POST", "/v1/exams", json=body, headers={"Idempotency-Key": key})
        if resp is not None and resp.status_code == 201:
            return str(resp.json()["id"])
        await asyncio.sleep(1.0)
    raise RuntimeError("could not create the exam")


@dataclass
class Posted:
    """What the client saw of one submission it posted."""

    key: str
    """Idempotency-Key sent with every try (empty: none)."""
    student_id: str
    submission_id: str | None = None
    """Id of the first 202; ``None`` if never accepted."""
    ids_seen: set[str] = field(default_factory=set)
    """Every submission id a 2xx answer for this key carried (more than one: a duplicate)."""
    attempts: int = 0
    replayed: int = 0


async def post_submission(http: Http, exam_id: str, posted: Posted, answers: dict[str, Any], *,
                          retry_for: float, external_id: str | None = None) -> None:
    """POST one submission with its Idempotency-Key, retrying outages with the same key for ``retry_for`` s."""
    body: dict[str, Any] = {"exam_id": exam_id, "student_id": posted.student_id, "answers": answers}
    if external_id:
        body["external_id"] = external_id
    end = time.monotonic() + retry_for
    while True:
        posted.attempts += 1
        headers = {"Idempotency-Key": posted.key} if posted.key else {}
        resp = await http.request("POST", "/v1/submissions", json=body, headers=headers)
        if resp is not None and resp.status_code == 202:
            sid = str(resp.json()["submission_id"])
            posted.ids_seen.add(sid)
            posted.submission_id = posted.submission_id or sid
            posted.replayed += resp.headers.get("idempotent-replayed") == "true"
            return
        if resp is not None and resp.status_code not in RETRY_STATUSES and resp.status_code < 500:
            raise RuntimeError(f"POST /v1/submissions -> {resp.status_code}: {resp.text[:300]}")
        if time.monotonic() >= end:
            return
        retry_after = resp.headers.get("retry-after") if resp is not None else None
        await asyncio.sleep(min(5.0, float(retry_after)) if retry_after and retry_after.isdigit() else 1.0)


@dataclass
class Load:
    """``n`` submissions, each with its own key and student: ``burst`` at once, then one every ``interval`` s.

    The burst makes many gradings return their grades at the same moment (checkpoint writes pile up);
    the trickle keeps gradings starting while a fault is injected.
    """

    http: Http
    exam_id: str
    questions: list[Question]
    n: int
    interval: float
    retry_for: float
    burst: int = 0
    label: str = "load"
    posted: list[Posted] = field(default_factory=list)
    finished: bool = False
    """Every post has ended (accepted or given up)."""

    async def run(self) -> None:
        """Post all submissions (each retried through outages); return when every post has ended."""
        tasks = []
        for i in range(self.n):
            p = Posted(key=f"{self.label}-{uuid.uuid4()}", student_id=f"{self.label}-{i:03d}")
            self.posted.append(p)
            answers = answers_for(self.questions, seed=i)
            tasks.append(asyncio.create_task(post_submission(self.http, self.exam_id, p, answers,
                                                             retry_for=self.retry_for)))
            if i + 1 >= self.burst:
                await asyncio.sleep(self.interval)
        await asyncio.gather(*tasks)
        self.finished = True

    def accepted(self) -> list[str]:
        """Ids of the submissions the API accepted."""
        return [p.submission_id for p in self.posted if p.submission_id]


class Prober:
    """Reads while the scenario runs: a submission, a list page, a progress query, in turn."""

    def __init__(self, http: Http, ids: Any, interval: float = 0.25) -> None:
        self.http = http
        self.ids = ids
        """Callable returning the ids accepted so far."""
        self.interval = interval
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop probing and wait for the last request."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            ids = self.ids()
            if ids:
                sid = random.choice(ids)
                route = [f"/v1/submissions/{sid}", "/v1/submissions?page_size=20",
                         f"/v1/submissions/{sid}/progress"][turn % 3]
                await self.http.request("GET", route)
                turn += 1
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass


async def duplicate_key_storm(http: Http, exam_id: str, questions: list[Question], *, keys: int,
                              copies: int, retry_for: float) -> dict[str, Any]:
    """Storm the intake with duplicates; return what the client saw.

    1. ``keys`` Idempotency-Keys, each sent ``copies`` times at once with the same body (409 while the
       first runs, then replays): each key must map to one submission.
    2. Each key once more with another body: 422 expected.
    3. ``keys`` external ids, each posted ``copies`` times at once without a key: the natural key
       (exam, student, external_id) must map to one submission.
    """
    by_key: dict[str, list[Posted]] = {}
    jobs = []
    for i in range(keys):
        key, student = f"storm-{uuid.uuid4()}", f"storm-k{i:03d}"
        answers = answers_for(questions, seed=1000 + i)
        by_key[key] = [Posted(key=key, student_id=student) for _ in range(copies)]
        jobs += [post_submission(http, exam_id, p, answers, retry_for=retry_for) for p in by_key[key]]
    by_ext: dict[str, list[Posted]] = {}
    for i in range(keys):
        ext, student = f"ext-{uuid.uuid4()}", f"storm-x{i:03d}"
        answers = answers_for(questions, seed=2000 + i)
        by_ext[ext] = [Posted(key="", student_id=student) for _ in range(copies)]
        jobs += [post_submission(http, exam_id, p, answers, retry_for=retry_for, external_id=ext)
                 for p in by_ext[ext]]
    random.shuffle(jobs)
    await asyncio.gather(*jobs)
    mismatched: Counter[str] = Counter()
    for i, (key, group) in enumerate(by_key.items()):
        body = {"exam_id": exam_id, "student_id": group[0].student_id,
                "answers": answers_for(questions, seed=3000 + i)}
        resp = await http.request("POST", "/v1/submissions", json=body, headers={"Idempotency-Key": key})
        mismatched[str(resp.status_code) if resp is not None else "no answer"] += 1

    def ids(groups: dict[str, list[Posted]]) -> list[set[str]]:
        return [set().union(*(p.ids_seen for p in group)) for group in groups.values()]

    key_ids, ext_ids = ids(by_key), ids(by_ext)
    return {
        "keys": keys, "copies": copies,
        "keys_with_several_ids": sum(len(s) > 1 for s in key_ids),
        "keys_never_accepted": sum(not s for s in key_ids),
        "replayed": sum(p.replayed for group in by_key.values() for p in group),
        "other_body_answers": dict(mismatched),
        "other_body_not_422": sum(n for code, n in mismatched.items() if code != "422"),
        "external_ids_with_several_ids": sum(len(s) > 1 for s in ext_ids),
        "external_ids_never_accepted": sum(not s for s in ext_ids),
        "accepted_ids": sorted(set().union(*key_ids, *ext_ids)),
    }
