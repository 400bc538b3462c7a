// The review queue: each needs_review submission's flagged answers beside question, rubric and grade; approve or
// override through POST /v1/submissions/{id}/review; cards follow their exams' live feeds.
import {
  api, badge, debouncer, el, fmtAnswer, fmtPoints, follow, idempotencyKey, problemText, requireToken, showError,
  STATUS_EVENTS,
} from "./common.js";
import { criteriaOutcome, rubricView } from "./rubric.js";

const PAGE_SIZE = 10;
const queue = document.getElementById("queue");
const queueStatus = document.getElementById("queue-status");
const later = debouncer(300);
const exams = new Map();   // exam id -> exam (questions with rubrics)
const feeds = new Map();   // exam id -> feed
const cards = new Map();   // submission id -> {card, status, form, note}
let page = 1;

async function exam(id) {
  if (!exams.has(id)) exams.set(id, api(`/v1/exams/${id}`).then((r) => r.data));
  return exams.get(id);
}

function setStatus(id, status, message) {
  const c = cards.get(id);
  if (!c) return;
  c.card.dataset.status = status;
  c.status.replaceChildren(badge(status));
  const open = status === "needs_review";
  for (const control of c.form.querySelectorAll("input, textarea, button")) control.disabled = !open;
  if (message) c.note.textContent = message;
  else if (!open) c.note.textContent = `Reviewed: the submission is now ${status}.`;
}

function questionBlock(sid, result, question, answer) {
  const base = `${sid}-${result.question_id}`;
  return el("fieldset", { class: "question", "data-question-id": result.question_id },
    el("legend", {}, `${result.question_id} · ${question ? question.type : ""} · up to ${fmtPoints(result.max_points)} points`),
    question ? el("p", { class: "prompt" }, question.prompt) : null,
    el("div", { class: "cols" },
      el("div", {}, el("h3", {}, "Answer"), el("blockquote", { class: "answer" }, fmtAnswer(answer))),
      el("div", {}, el("h3", {}, "Rubric"), rubricView(question)),
      el("div", {}, el("h3", {}, "Grader"),
        el("p", {}, el("strong", { class: "grader-score" }, `${fmtPoints(result.score)} / ${fmtPoints(result.max_points)}`),
          ` · confidence ${Math.round(result.confidence * 100)}%`, result.flagged ? el("span", { class: "tag" }, "flagged") : null),
        el("p", { class: "feedback" }, result.feedback || "(no feedback)"),
        criteriaOutcome(result))),
    el("div", { class: "edit" },
      el("label", { for: `score-${base}` }, `Score for ${result.question_id} (0 to ${fmtPoints(result.max_points)})`),
      el("input", { id: `score-${base}`, name: `score:${result.question_id}`, type: "number", min: "0",
        max: String(result.max_points), step: "any", value: String(result.score), required: true,
        "data-original": String(result.score) }),
      el("label", { for: `feedback-${base}` }, `Feedback for ${result.question_id}`),
      el("textarea", { id: `feedback-${base}`, name: `feedback:${result.question_id}`, rows: "2",
        "data-original": result.feedback || "" }, result.feedback || "")));
}

function decision(form, action) {
  const reason = form.querySelector("textarea[name=reason]").value.trim();
  const body = { approve: true };
  if (reason) body.reason = reason;
  if (action === "approve") return body;
  const overrides = {};
  for (const input of form.querySelectorAll("input[name^='score:']")) {
    const q = input.name.slice("score:".length);
    const feedback = form.querySelector(`textarea[name='feedback:${CSS.escape(q)}']`);
    const scoreChanged = Number(input.value) !== Number(input.dataset.original);
    const feedbackChanged = feedback.value !== feedback.dataset.original;
    if (input.value === "" || Number.isNaN(Number(input.value))) throw new Error(`Score for ${q}: enter a number.`);
    if (scoreChanged || feedbackChanged) {
      overrides[q] = { score: Number(input.value) };
      if (feedbackChanged) overrides[q].feedback = feedback.value;
    }
  }
  if (!Object.keys(overrides).length) throw new Error("Change a score or a feedback to override, or approve instead.");
  body.overrides = overrides;
  return body;
}

async function submitReview(sid, form, action) {
  const c = cards.get(sid);
  let body;
  try { body = decision(form, action); } catch (err) { c.note.textContent = err.message; return; }
  c.note.textContent = action === "approve" ? "Approving…" : "Saving the override…";
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  try {
    const { status, data } = await api(`/v1/submissions/${sid}/review`, { method: "POST", body,
      headers: { "Idempotency-Key": idempotencyKey() } });
    if (status === 202) c.note.textContent = "Accepted; the grading workflow is applying it…";
    else setStatus(sid, data.status);
  } catch (err) {
    c.note.textContent = `The review failed: ${problemText(err)}`;
    for (const b of form.querySelectorAll("button")) b.disabled = false;
  }
}

async function card(item) {
  const [{ data: sub }, { data: answers }] = await Promise.all([
    api(`/v1/submissions/${item.id}`), api(`/v1/submissions/${item.id}/answers`)]);
  const ex = await exam(sub.exam_id);
  const questions = new Map(ex.questions.map((q) => [q.id, q]));
  const flagged = sub.results.filter((r) => r.flagged);
  const shown = flagged.length ? flagged : sub.results;
  const status = el("span", { class: "status", role: "status", "aria-live": "polite" }, badge(sub.status));
  const note = el("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const headingId = `h-${sub.id}`;
  const form = el("form", { class: "review-form", novalidate: true },
    shown.map((r) => questionBlock(sub.id, r, questions.get(r.question_id), answers.answers[r.question_id])),
    el("label", { for: `reason-${sub.id}` }, "Reason (kept in the audit log)"),
    el("textarea", { id: `reason-${sub.id}`, name: "reason", rows: "2" }),
    el("div", { class: "actions" },
      el("button", { type: "submit", class: "primary", value: "approve" }, "Approve grades"),
      el("button", { type: "submit", value: "override" }, "Override scores")),
    note);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submitReview(sub.id, form, e.submitter ? e.submitter.value : "approve");
  });
  const article = el("article", { class: "card", id: `sub-${sub.id}`, "data-submission-id": sub.id,
    "data-status": sub.status, "aria-labelledby": headingId },
    el("h2", { id: headingId }, `${sub.student_id} · ${ex.title}`),
    el("p", { class: "meta" }, status, ` total ${fmtPoints(sub.total)} / ${fmtPoints(sub.max_total)} · `,
      `${flagged.length} flagged of ${sub.results.length} · `,
      el("a", { href: `/ui/submissions/${sub.id}` }, "submission page")),
    form);
  cards.set(sub.id, { card: article, status, form, note, examId: sub.exam_id });
  watch(sub.exam_id);
  return article;
}

async function refresh(sid) {
  try {
    const { data } = await api(`/v1/submissions/${sid}`);
    setStatus(sid, data.status);
  } catch (err) {
    if (err.status !== 404) showError(`Could not refresh a submission: ${problemText(err)}`);
  }
}

function watch(examId) {
  if (feeds.has(examId)) return;
  feeds.set(examId, follow(`/v1/ws/exams/${examId}`, (msg) => {
    if (msg.event_type === "snapshot") {  // following from now on: re-read this exam's cards (changes before)
      for (const [sid, c] of cards) if (c.examId === examId) later(sid, () => refresh(sid));
      return;
    }
    if (!STATUS_EVENTS.has(msg.event_type) || !cards.has(msg.submission_id)) return;
    const p = msg.payload || {};
    if (p.status) setStatus(msg.submission_id, p.status);
    later(msg.submission_id, () => refresh(msg.submission_id));
  }));
}

async function load() {
  queueStatus.textContent = "Loading…";
  for (const f of feeds.values()) f.stop();
  feeds.clear();
  cards.clear();
  try {
    const q = new URLSearchParams({ status: "needs_review", page: String(page), page_size: String(PAGE_SIZE),
      sort_by: "updated_at", sort_order: "asc", fields: "id" });
    const { data } = await api(`/v1/submissions?${q}`);
    const articles = await Promise.all(data.items.map(card));
    queue.replaceChildren(...articles);
    queueStatus.textContent = data.items.length
      ? `${data.items.length} submission${data.items.length === 1 ? "" : "s"} to review on page ${page}` : "Nothing to review.";
    document.getElementById("page-label").textContent = `Page ${page}`;
    document.getElementById("prev").disabled = page <= 1;
    document.getElementById("next").disabled = !data.has_more;
    queue.dataset.loaded = "true";
  } catch (err) {
    showError(`Could not load the review queue: ${problemText(err)}`);
    queueStatus.textContent = "";
  }
}

if (requireToken()) {
  document.getElementById("prev").addEventListener("click", () => { page -= 1; load(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; load(); });
  document.getElementById("refresh").addEventListener("click", load);
  load();
}
