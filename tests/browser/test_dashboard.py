"""The dashboard in a real browser against the real API, workers and services.

(1) a submission graded while its exam page is open shows its progress and its final status; (2) a
reviewer approves a flagged submission in the review queue and sees it turn completed; (3) no page
logs a console error. Screenshots of the exam, review-queue and submission pages go to
``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from playwright.async_api import expect

from tests.browser.a11y import a11y_problems
from tests.browser.conftest import WAIT_MS
from tests.integration.api.conftest import GOOD_ANSWERS, exam_body


async def _submit(dash, title: str, student: str) -> tuple[str, str]:
    """A new exam and a good submission to it: (exam id, submission id)."""
    exam = await dash.post("/v1/exams", exam_body(title))
    accepted = await dash.post("/v1/submissions", {"exam_id": exam["id"], "student_id": student,
                                                   "answers": GOOD_ANSWERS})
    return exam["id"], accepted["submission_id"]


async def _flagged_card(dash, new_tab, title: str, student: str):
    """A submission graded into needs_review, and its card in a reviewer's review queue: (id, tab, card)."""
    _, sid = await _submit(dash, title, student)
    await dash.wait_status(sid, "needs_review")
    tab = await new_tab(dash.reviewer_token)
    await tab.page.goto(f"{dash.url}/ui/review")
    return sid, tab, tab.page.locator(f"#sub-{sid}")


async def test_a_submission_graded_while_the_exam_page_is_open_shows_progress_then_its_status(dashboard, new_tab):
    exam = await dashboard.post("/v1/exams", exam_body("Biology live"))
    tab = await new_tab(dashboard.reviewer_token)
    page = tab.page
    await page.goto(f"{dashboard.url}/ui/exams/{exam['id']}")
    await expect(page.locator("#exam-title")).to_have_text("Biology live")
    await expect(page.locator("#subs-table")).to_have_attribute("data-loaded", "true")
    await expect(page.locator("#subs-status")).to_have_text("No submissions.")
    await expect(page.locator("#live")).to_have_text("live")  # the exam feed is open before the submission

    dashboard.gate.close("q1")  # q1 is graded at once; q2..q4 wait until the gate opens
    accepted = await dashboard.post("/v1/submissions", {"exam_id": exam["id"], "student_id": "s-live",
                                                        "answers": GOOD_ANSWERS})
    row = page.locator(f"tr[data-submission-id='{accepted['submission_id']}']")
    await expect(row.locator("th")).to_have_text("s-live")
    await expect(row.locator(".progress-text")).to_have_text("1/4")  # from the feed's grading.progress
    await expect(row.locator("[data-status]").first).to_have_text("grading")
    assert {call.question_id for call in dashboard.gate.held} == {"q2", "q3", "q4"}
    await expect(row.locator(".chip.done")).to_have_text(["q1 ✓"])  # the feed names the graded questions
    await expect(row.locator(".chip:not(.done)")).to_have_text(["q2", "q3", "q4"])
    await expect(page.locator("#counts li[data-status='grading'] .count")).to_have_text("1")
    await tab.shot("exam-page-grading.png")

    dashboard.gate.open()
    await expect(row.locator(".badge")).to_have_text("completed", timeout=WAIT_MS)
    await expect(row.locator("td.num")).to_have_text("10 / 10")
    await expect(row.locator(".progress-text")).to_have_text("4/4")
    await expect(page.locator("#counts li[data-status='completed'] .count")).to_have_text("1")
    await expect(page.locator("#counts li[data-status='grading'] .count")).to_have_text("0")
    stored = await dashboard.get(f"/v1/submissions/{accepted['submission_id']}")
    assert stored["status"] == "completed" and stored["total"] == 10
    await tab.shot("exam-page.png")

    async with page.expect_download() as download_info:  # the CSV export, fetched with the tab's token
        await page.get_by_role("link", name="Download grades (CSV)").click()
    download = await download_info.value
    assert download.suggested_filename == f"grades-{exam['id']}.csv"
    csv_text = await asyncio.to_thread(Path(await download.path()).read_text)
    assert "s-live" in csv_text and accepted["submission_id"] in csv_text, csv_text
    assert tab.errors == []


async def test_a_reviewer_signs_in_approves_a_flagged_submission_and_sees_it_completed(review_dashboard, new_tab):
    _, sid = await _submit(review_dashboard, "Biology review", "s-flagged")

    tab = await new_tab()  # not signed in: the dev button mints a reviewer token for the tenant
    page = tab.page
    await page.goto(f"{review_dashboard.url}/ui/review")
    await expect(page).to_have_url(re.compile(r"/ui/signin\?next=%2Fui%2Freview"))
    await page.get_by_label("Tenant").fill(review_dashboard.tenant_id)
    await page.get_by_role("button", name="Sign in with a dev reviewer token").click()
    await expect(page).to_have_url(re.compile(r"/ui/review$"))
    await expect(page.locator("#who-text")).to_contain_text(f"dev-reviewer · {review_dashboard.tenant_id} · reviewer")

    await review_dashboard.wait_status(sid, "needs_review")
    await page.get_by_role("button", name="Refresh").click()  # the queue may have loaded before grading ended
    card = page.locator(f"#sub-{sid}")
    await expect(card.locator(".status .badge")).to_have_text("needs_review")
    await expect(card.locator("fieldset")).to_have_count(1)  # only the flagged answer: the essay
    q4 = card.locator("fieldset[data-question-id='q4']")
    await expect(q4.locator(".prompt")).to_have_text("Prompt q4")
    await expect(q4.locator(".answer")).to_have_text(GOOD_ANSWERS["q4"])
    await expect(q4.locator(".criteria li")).to_have_text(["thesis (3 pts) · keywords: because",
                                                           "example (2 pts) · keywords: example"])
    await expect(q4.locator(".grader-score")).to_have_text("5 / 5")
    await expect(q4).to_contain_text("confidence 80%")
    await expect(q4.locator(".feedback")).to_contain_text("Met: e1 (thesis)")
    await expect(q4.get_by_label("Score for q4 (0 to 5)")).to_have_value("5")
    await tab.shot("review-queue.png")

    await card.get_by_label("Reason (kept in the audit log)").fill("grades checked")
    await card.get_by_role("button", name="Approve grades").click()
    await expect(card.locator(".status .badge")).to_have_text("completed")
    await expect(card.locator(".form-status")).to_have_text("Reviewed: the submission is now completed.")
    await expect(card.get_by_role("button", name="Approve grades")).to_be_disabled()
    stored = await review_dashboard.get(f"/v1/submissions/{sid}")
    assert stored["status"] == "completed"
    assert tab.errors == []


async def test_no_page_logs_a_console_error(review_dashboard, new_tab):
    exam_id, sid = await _submit(review_dashboard, "Biology pages", "s-pages")
    tab = await new_tab(review_dashboard.reviewer_token)
    page = tab.page
    url = review_dashboard.url

    await page.goto(url)  # / redirects to the exams list
    await expect(page).to_have_url(f"{url}/ui")
    await expect(page.get_by_role("link", name="Biology pages")).to_be_visible()
    assert await a11y_problems(page) == []
    await page.get_by_role("link", name="Biology pages").click()
    await expect(page.locator("#exam-title")).to_have_text("Biology pages")
    row = page.locator(f"tr[data-submission-id='{sid}']")
    await expect(row.locator(".badge")).to_have_text("needs_review")  # graded meanwhile, told by the feed or the list
    assert await a11y_problems(page) == []
    await row.get_by_role("link", name="s-pages").click()

    await expect(page).to_have_url(f"{url}/ui/submissions/{sid}")
    await expect(page.locator("#sub-title")).to_have_text("Submission of s-pages")
    await expect(page.locator("#sub-status")).to_have_text("needs_review")
    await expect(page.locator("#sub-total")).to_have_text("10 / 10")
    answers = page.locator("#answers-table tbody tr")
    await expect(answers).to_have_count(4)
    await expect(page.locator("#answers-table tr[data-question-id='q4'] .answer")).to_have_text(GOOD_ANSWERS["q4"])
    await expect(page.locator("#sub-progress .progress-text")).to_have_text("4/4")
    await expect(page.locator("#review-link")).to_be_visible()
    history = page.locator("#history-table tbody tr")  # the API serves GET /v1/submissions/{id}/history
    await expect(history).to_have_count(4)
    await expect(history.locator("td:nth-child(4)")).to_have_text(["agent"] * 4)
    await tab.shot("submission-page.png")
    assert await a11y_problems(page) == []

    await page.goto(f"{url}/ui/review")
    await expect(page.locator(f"#sub-{sid} .status .badge")).to_have_text("needs_review")
    assert await a11y_problems(page) == []
    await page.goto(f"{url}/ui/signin")
    await expect(page.get_by_role("button", name="Sign in with a dev reviewer token")).to_be_visible()
    assert await a11y_problems(page) == []
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(f"{url}/ui/signin")
    await page.goto(f"{url}/ui/exams/{exam_id}")  # signed out: back to sign-in
    await expect(page).to_have_url(re.compile(r"/ui/signin\?next="))
    assert tab.errors == []

    await page.get_by_label("Bearer token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#page-error")).to_contain_text("That token does not work")
    await expect(page).to_have_url(re.compile(r"/ui/signin\?next="))  # told on the page, not sent around
    # the refused check is the browser's own network line, the only one
    assert len(tab.errors) == 1 and "status of 401" in tab.errors[0], tab.errors


async def test_progress_without_question_ids_shows_the_counts(dashboard, new_tab, pools):
    from infra.events import live
    from tests.integration.workflows.harness import seed_exam, seed_submission, text

    exam_id = await seed_exam(pools, dashboard.tenant_id, [text("q1"), text("q2"), text("q3")])
    seeded = await seed_submission(pools, dashboard.tenant_id, exam_id, {"q1": "glucose"})  # queued, no workflow
    tab = await new_tab(dashboard.reviewer_token)
    page = tab.page
    await page.goto(f"{dashboard.url}/ui/exams/{exam_id}")
    row = page.locator(f"tr[data-submission-id='{seeded.submission_id}']")
    await expect(row.locator(".progress-text")).to_have_text("0/3")
    await expect(page.locator("#live")).to_have_text("live")
    # an older worker's progress message: counts only
    await live.publish_progress(pools.redis, tenant_id=dashboard.tenant_id, submission_id=seeded.submission_id,
                                progress={"questions_done": 2, "questions_total": 3}, exam_id=exam_id)
    await expect(row.locator(".progress-text")).to_have_text("2/3")
    await expect(row.locator("progress")).to_have_attribute("value", "2")
    await expect(row.locator(".chip")).to_have_count(0)  # no question is named graded when the feed did not say
    await expect(row.locator(".badge")).to_have_text("grading")
    assert tab.errors == []


async def test_a_reviewer_overrides_a_flagged_score_from_the_keyboard(review_dashboard, new_tab):
    sid, tab, card = await _flagged_card(review_dashboard, new_tab, "Biology override", "s-over")
    page = tab.page
    score = card.get_by_label("Score for q4 (0 to 5)")
    await expect(score).to_have_value("5")

    await score.fill("7")  # above the question's points: the API's 422 names the field, nothing changes
    await card.get_by_role("button", name="Override scores").click()
    await expect(card.locator(".form-status")).to_contain_text("overrides.q4.score")
    await expect(card.locator(".status .badge")).to_have_text("needs_review")

    await score.fill("3.5")
    await card.get_by_label("Feedback for q4").fill("thesis is thin")
    await card.get_by_label("Reason (kept in the audit log)").fill("second reading")
    await card.get_by_role("button", name="Override scores").focus()
    await page.keyboard.press("Enter")
    await expect(card.locator(".status .badge")).to_have_text("completed")
    stored = await review_dashboard.get(f"/v1/submissions/{sid}")
    q4 = next(r for r in stored["results"] if r["question_id"] == "q4")
    assert (stored["status"], stored["total"], q4["score"], q4["feedback"]) == ("completed", 8.5, 3.5, "thesis is thin")
    # the 422 is the browser's one network line; nothing else
    assert len(tab.errors) == 1 and "status of 422" in tab.errors[0], tab.errors


async def test_the_review_queue_follows_a_review_made_elsewhere(review_dashboard, new_tab):
    sid, tab, card = await _flagged_card(review_dashboard, new_tab, "Biology elsewhere", "s-else")
    page = tab.page
    await expect(card.locator(".status .badge")).to_have_text("needs_review")
    await expect(page.locator("#queue")).to_have_attribute("data-loaded", "true")
    await page.evaluate("window.notReloaded = true")  # gone if the page were loaded again

    reviewed = await review_dashboard.post(f"/v1/submissions/{sid}/review", {"approve": True, "reason": "by API"})
    assert reviewed["status"] == "completed"
    await expect(card.locator(".status .badge")).to_have_text("completed")  # told by the exam feed
    await expect(card.locator(".form-status")).to_have_text("Reviewed: the submission is now completed.")
    assert await page.evaluate("window.notReloaded === true")
    assert tab.errors == []
