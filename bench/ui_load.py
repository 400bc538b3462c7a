"""How long the dashboard's exam page takes to show its table with 500 submissions on the exam.

``python -m bench.ui_load`` starts a fresh embedded stack (PostgreSQL, Redis; no Temporal: nothing is
graded), creates one exam of 4 questions and ``BENCH_UI_N`` (default 500) submissions through the
intake store (:func:`infra.stores.submissions.create_submission`, each in its own transaction, as the
API does), then gives them a realistic mix of statuses and totals (most completed, some needing
review, some grading or queued). It serves the real API with uvicorn and opens the exam page
``BENCH_UI_LOADS`` times (default 10, each in a fresh browser context: no cache, a new token) in
Debian's chromium through Playwright, and reads from the page:

- ``table_ms``: the page's own ``performance.mark("gradeflow:table-rendered")`` (milliseconds since the
  navigation started, set when the first page of rows is in the DOM), and
- ``wall_ms``: the test's clock from ``page.goto`` until the table's ``data-loaded`` attribute and its
  50 rows are there;

plus the time a "Next page" click takes (pages 2-10) and what the median load fetched when. Writes
``bench/results/ui_load-<UTC>.json`` and a screenshot to ``tests/artifacts/exam-page-500.png``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.standalone import bench_settings, migrated_stack, save_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "tests" / "artifacts"
TENANT = "bench-ui"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTIONS = [
    {"id": "q1", "type": "choice", "prompt": "Which organelle does photosynthesis?", "max_points": 1,
     "rubric": {"options": ["a", "b", "c"], "correct": ["b"]}},
    {"id": "q2", "type": "numeric", "prompt": "6 x 7?", "max_points": 2, "rubric": {"value": 42, "abs_tol": 0.5}},
    {"id": "q3", "type": "short_answer", "prompt": "What do plants make?", "max_points": 2,
     "rubric": {"criteria": [{"id": "c1", "description": "glucose", "points": 2, "keywords": ["glucose"]}]}},
    {"id": "q4", "type": "essay", "prompt": "Why is the sky blue?", "max_points": 5,
     "rubric": {"criteria": [{"id": "e1", "description": "scattering", "points": 5, "keywords": ["scattering"]}]}},
]
ANSWERS = {"q1": "b", "q2": 42, "q3": "Glucose.", "q4": "Rayleigh scattering of sunlight."}
RANKED = "(SELECT id, row_number() OVER (ORDER BY created_at) AS n FROM submissions WHERE exam_id = %(exam)s)"
START_SQL = f"UPDATE submissions s SET status = 'grading' FROM {RANKED} r WHERE s.id = r.id AND r.n %% 50 <> 2"
"""Every submission but one in fifty leaves ``queued`` (the status trigger allows queued -> grading only)."""
FINISH_SQL = f"""
UPDATE submissions s SET status = CASE WHEN r.n %% 25 = 0 THEN 'needs_review' ELSE 'completed' END,
                         total = r.n %% 11, graded_at = now()
  FROM {RANKED} r WHERE s.id = r.id AND r.n %% 50 NOT IN (1, 2)"""
"""Then all but one in fifty of those finish: one in twenty-five needs review, the rest complete."""


TIMELINE_JS = """[["document", 0, Math.round(performance.getEntriesByType("navigation")[0].responseEnd)],
  ...performance.getEntriesByType("resource").map((e) => [
    new URL(e.name).pathname + new URL(e.name).search.slice(0, 40),
    Math.round(e.startTime), Math.round(e.responseEnd)])]"""
"""What the page fetched and when: ``[path, start ms, end ms]`` from the navigation's start."""


async def seed(settings: Any, admin_url: str, n: int) -> str:
    """Create the exam and ``n`` submissions through the stores; give them a mix of statuses."""
    from agents.rubric import Question
    from infra.cache.copies import Cache
    from infra.db.pools import PoolManager
    from infra.stores import exams, submissions

    pools = PoolManager.from_settings(settings, name="bench-ui-seed")
    await pools.open()
    try:
        cache = Cache(pools.redis, ttl_seconds=settings.cache_ttl_seconds)
        exam = await exams.create_exam(pools, cache, TENANT, title="Physics and biology, week 12",
                                       questions=[Question.model_validate(q) for q in QUESTIONS])
        for i in range(n):
            await submissions.create_submission(pools, TENANT, exam_id=exam["id"], student_id=f"student-{i:03d}",
                                                answers=ANSWERS, trace_id=f"{i:032x}", submitted_by="bench")
    finally:
        await pools.close()
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        for statement in (START_SQL, FINISH_SQL):
            await conn.execute(statement, {"exam": exam["id"]})
    return str(exam["id"])


async def measure(settings: Any, exam_id: str, loads: int) -> dict[str, Any]:
    """Serve the API and time the exam page ``loads`` times in fresh browser contexts."""
    from playwright.async_api import async_playwright, expect

    from api.app import create_app
    from infra.security.tokens import mint_token
    from tests.integration.api.server import running_server

    table_ms: list[float] = []
    wall_ms: list[float] = []
    last_page_ms: list[float] = []
    timelines: list[list[Any]] = []
    async with running_server(create_app(settings)) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for i in range(loads + 1):  # the first load warms the server (route caches, pools): not counted
            token = mint_token(settings, tenant=TENANT, roles=["reviewer"], sub="bench")
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            await context.add_init_script(f"sessionStorage.setItem('gradeflow.token', {json.dumps(token)});")
            page = await context.new_page()
            started = time.perf_counter()
            await page.goto(f"{url}/ui/exams/{exam_id}")
            await page.wait_for_selector("#subs-table[data-loaded='true'] tbody tr:nth-child(50)", timeout=60_000)
            wall = (time.perf_counter() - started) * 1000
            mark = await page.evaluate("performance.getEntriesByName('gradeflow:table-rendered')[0].startTime")
            timeline = await page.evaluate(TIMELINE_JS)
            clicked = time.perf_counter()
            for n in range(2, 11):  # to page 10 (rows 451-500), each page's rows in place before the next click
                await page.click("#next")
                await expect(page.locator("#subs-status")).to_have_text(
                    f"Showing {(n - 1) * 50 + 1}–{n * 50} (page {n})", timeout=60_000)
            paged = (time.perf_counter() - clicked) * 1000 / 9
            if i == 0:
                await page.click("#prev")  # back to a page with every status for the picture
                await page.goto(f"{url}/ui/exams/{exam_id}")
                await page.wait_for_selector("#subs-table[data-loaded='true'] tbody tr:nth-child(50)")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "exam-page-500.png"))
            else:
                timelines.append(timeline)
                table_ms.append(float(mark))
                wall_ms.append(wall)
                last_page_ms.append(paged)
            await context.close()
        await browser.close()

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
                "max": round(max(values), 1)}

    median_load = sorted(range(len(table_ms)), key=table_ms.__getitem__)[len(table_ms) // 2]
    return {"loads": loads, "timeline_of_median_load": timelines[median_load],
            "table_ms": summary(table_ms), "wall_ms": summary(wall_ms),
            "next_page_ms": summary(last_page_ms), "samples": {"table_ms": table_ms, "wall_ms": wall_ms}}


def main() -> int:
    """Start an embedded stack, seed, measure, print and save the JSON report."""
    logging.basicConfig(level=logging.ERROR)
    n = int(os.environ.get("BENCH_UI_N", "500"))
    loads = int(os.environ.get("BENCH_UI_LOADS", "10"))
    started_at = datetime.now(UTC)
    with migrated_stack("gradeflow-uibench-", "gradeflow_uibench") as (stack, admin):
        settings = bench_settings(stack, admin)
        exam_id = asyncio.run(seed(settings, admin, n))
        report = {"timestamp": started_at.isoformat(timespec="seconds"), "submissions": n, "exam_id": exam_id,
                  "page_size": 50, "browser": "Debian chromium (headless) via Playwright",
                  **asyncio.run(measure(settings, exam_id, loads))}
    save_report("ui_load", started_at, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
