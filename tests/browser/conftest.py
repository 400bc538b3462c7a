"""Browser tests of the dashboard: Debian's chromium driven by Playwright against the real API.

One browser for the whole session (``browser``); each test gets a fresh context (``new_page``) whose
console errors and uncaught exceptions are collected, and a real API served by uvicorn with real
grading workers (``dashboard``). Graders can be held per question (``gate``) so a test sees grading
half done for as long as it needs, with no sleeps. Chromium is installed by ``make test`` (a stamp
file in the Makefile); the bundled-browser download of Playwright is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.agent import GradeCall
from infra.security.tokens import mint_token
from tests.integration.api.server import running_server
from tests.integration.workflows.harness import grading_workers, saver  # noqa: F401 - fixture

CHROMIUM = os.environ.get("GRADEFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
"""Screenshots of the pages (gitignored)."""
WAIT_MS = 30_000
"""Longest a browser expectation waits for the page to show something (grading included)."""


def _chromium() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)"
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's chromium, headless, once per session."""
    from playwright.async_api import async_playwright

    executable = _chromium()
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Gate:
    """Holds graders: every question not in ``passes`` waits for :meth:`open` (none are held until :meth:`close`)."""

    passes: set[str] = field(default_factory=set)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    held: list[GradeCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.released.set()

    def close(self, *passes: str) -> None:
        self.passes = set(passes)
        self.released.clear()

    def open(self) -> None:
        self.released.set()

    async def hook(self, call: GradeCall) -> None:
        if call.question_id not in self.passes and not self.released.is_set():
            self.held.append(call)
            await self.released.wait()


@dataclass
class Dashboard:
    """A running API with grading workers, and what a test needs to talk to it."""

    url: str
    tenant_id: str
    admin: dict[str, str]
    reviewer_token: str
    gate: Gate

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30, headers=self.admin) as http:
            response = await http.post(path, json=body)
            assert response.status_code in (200, 201, 202), response.text
            return response.json()

    async def wait_status(self, submission_id: str, status: str, *, within: float = 60.0) -> None:
        """Read the submission until it is in ``status`` (at most ``within`` seconds)."""
        deadline = asyncio.get_running_loop().time() + within
        while (view := await self.get(f"/v1/submissions/{submission_id}"))["status"] != status:
            assert asyncio.get_running_loop().time() < deadline, view
            await asyncio.sleep(0.2)

    async def get(self, path: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30, headers=self.admin) as http:
            response = await http.get(path)
            assert response.status_code == 200, response.text
            return response.json()


@contextlib.asynccontextmanager
async def outbox_relay(pools: Any) -> AsyncIterator[None]:
    """The real outbox relay (woken by LISTEN/NOTIFY): durable events reach the live feeds as in production."""
    from infra.events.relay import OutboxRelay

    relay = OutboxRelay(pools, name="browser-test-relay")
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.wait_for(relay.listening.wait(), 30)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _dashboard_fixture(threshold: float | None) -> Any:
    @pytest.fixture
    async def fixture(app_settings, temporal_client, task_queue, pools, saver, tenant_id) -> AsyncIterator[Dashboard]:  # noqa: F811
        from api.app import create_app

        options: dict[str, Any] = {"task_queue": task_queue, "cognitive_queue": f"{task_queue}-cog"}
        if threshold is not None:
            options["low_confidence_threshold"] = threshold
        gate = Gate()
        app = create_app(app_settings, temporal_client=temporal_client, grading_options=options)
        async with grading_workers(temporal_client, pools, saver, app_settings, task_queue, grade_hook=gate.hook), \
                outbox_relay(pools), running_server(app) as url:
            admin = {"Authorization": f"Bearer {mint_token(app_settings, tenant=tenant_id, roles=['admin'])}"}
            reviewer = mint_token(app_settings, tenant=tenant_id, roles=["reviewer"], sub="teacher-1")
            yield Dashboard(url, tenant_id, admin, reviewer, gate)
            gate.open()  # nothing stays held while the workers stop
    return fixture


dashboard = _dashboard_fixture(None)
"""The API whose gradings follow the default confidence threshold (good answers complete)."""
review_dashboard = _dashboard_fixture(0.99)
"""The API whose gradings always need review (every grade is below the 0.99 confidence threshold)."""


@dataclass
class Tab:
    """A page in its own browser context, with the console errors it logged."""

    page: Any
    errors: list[str]

    async def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path


NewTab = Callable[..., Awaitable[Tab]]


@pytest.fixture
async def new_tab(browser) -> AsyncIterator[NewTab]:
    """Factory: ``await new_tab(token=None)`` -> a :class:`Tab` (signed in with ``token`` when given)."""
    contexts: list[Any] = []

    async def make(token: str | None = None) -> Tab:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        if token is not None:
            # once per tab, as a sign-in would: a later sign-out stays signed out
            await context.add_init_script(
                "if (!sessionStorage.getItem('test.signed-in')) {"
                f" sessionStorage.setItem('gradeflow.token', {json.dumps(token)});"
                " sessionStorage.setItem('test.signed-in', '1'); }")
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        return Tab(page, errors)

    try:
        yield make
    finally:
        for context in contexts:
            await context.close()
