// The submission page: answers beside grades and feedback, live progress from the submission feed, and the
// score history when the API serves one.
import {
  api, badge, debouncer, el, fmtAnswer, fmtPoints, fmtTime, follow, problemText, progressView, requireToken,
  SETTLED, showError, STATUS_EVENTS,
} from "./common.js";
import { criteriaOutcome } from "./rubric.js";

const main = document.getElementById("main");
const sid = main.dataset.submissionId;
const historyUrl = main.dataset.historyUrl;
const later = debouncer(300);
let questionIds = [];
let questions = new Map();
let answers = {};
let current = null;

function renderProgress(done, total, graded) {
  document.getElementById("sub-progress").replaceChildren(progressView(done, total, questionIds, graded));
}

function render(sub) {
  current = sub;
  document.getElementById("sub-title").textContent = `Submission of ${sub.student_id}`;
  document.getElementById("sub-status").replaceWith(Object.assign(badge(sub.status), { id: "sub-status" }));
  document.getElementById("sub-total").textContent = sub.total === null || sub.total === undefined ? "–"
    : `${fmtPoints(sub.total)} / ${fmtPoints(sub.max_total)}`;
  document.getElementById("review-link").hidden = sub.status !== "needs_review";
  if (SETTLED.has(sub.status)) renderProgress(questionIds.length, questionIds.length, new Set(questionIds));
  else if (sub.status === "queued") renderProgress(0, questionIds.length, null);
  const results = new Map(sub.results.map((r) => [r.question_id, r]));
  const rows = questionIds.map((q) => {
    const r = results.get(q);
    const question = questions.get(q);
    return el("tr", { "data-question-id": q },
      el("th", { scope: "row" }, el("span", { class: "qid" }, q), question ? el("span", { class: "prompt" }, question.prompt) : null),
      el("td", {}, el("span", { class: "answer" }, fmtAnswer(answers[q]))),
      el("td", { class: "num" }, r ? `${fmtPoints(r.score)} / ${fmtPoints(r.max_points)}` : "–",
        r && r.flagged ? el("span", { class: "tag" }, "flagged") : null,
        r && r.overridden ? el("span", { class: "tag" }, "overridden") : null),
      el("td", { class: "num" }, r ? `${Math.round(r.confidence * 100)}%` : "–"),
      el("td", {}, r ? r.feedback || "" : "not graded yet", r ? criteriaOutcome(r) : null));
  });
  document.querySelector("#answers-table tbody").replaceChildren(...rows);
  document.getElementById("answers-table").dataset.loaded = "true";
}

async function reload() {
  try {
    const { data } = await api(`/v1/submissions/${sid}`);
    render(data);
  } catch (err) {
    showError(`Could not load the submission: ${problemText(err)}`);
  }
  loadHistory();
}

const HISTORY_COLUMNS = ["When", "Question", "Score", "Source", "By", "Reason"];

function historyRow(e) {
  const change = e.old_score === null || e.old_score === undefined ? fmtPoints(e.new_score)
    : `${fmtPoints(e.old_score)} → ${fmtPoints(e.new_score)}`;
  return el("tr", { "data-history-id": String(e.id) }, el("td", {}, fmtTime(e.created_at)), el("td", {}, e.question_id),
    el("td", { class: "num" }, change), el("td", {}, e.source), el("td", {}, e.actor_id || ""), el("td", {}, e.reason || ""));
}

async function loadHistory() {
  if (!historyUrl) return;  // the API serves no score history: the section stays hidden
  const section = document.getElementById("history");
  try {
    const { data } = await api(`${historyUrl}?page_size=500`);
    const entries = (data && data.items) || [];
    const table = document.getElementById("history-table");
    table.querySelector("thead").replaceChildren(el("tr", {}, HISTORY_COLUMNS.map((k) => el("th", { scope: "col" }, k))));
    table.querySelector("tbody").replaceChildren(...entries.map(historyRow));
    section.hidden = !entries.length;
  } catch (_) {
    section.hidden = true;  // a 404 (or any failure) hides it
  }
}

function onEvent(msg) {
  const p = msg.payload || {};
  if (msg.event_type === "snapshot") {
    if (p.results) render(p);
    return;
  }
  if (msg.event_type === "grading.progress") {
    if (current && SETTLED.has(current.status)) return;
    const graded = Array.isArray(p.graded_questions) ? new Set(p.graded_questions) : null;
    renderProgress(graded ? graded.size : Number(p.questions_done || 0), Number(p.questions_total || questionIds.length), graded);
    if (current && current.status === "queued") {
      current.status = "grading";
      document.getElementById("sub-status").replaceWith(Object.assign(badge("grading"), { id: "sub-status" }));
    }
    return;
  }
  if (STATUS_EVENTS.has(msg.event_type)) later("reload", reload);
}

async function start() {
  try {
    const [{ data: sub }, { data: ans }] = await Promise.all([api(`/v1/submissions/${sid}`), api(`/v1/submissions/${sid}/answers`)]);
    answers = ans.answers;
    const { data: exam } = await api(`/v1/exams/${sub.exam_id}`);
    questionIds = exam.questions.map((q) => q.id);
    questions = new Map(exam.questions.map((q) => [q.id, q]));
    document.getElementById("sub-meta").replaceChildren("Exam ", el("a", { href: `/ui/exams/${exam.id}` }, exam.title),
      ` · submitted ${fmtTime(sub.created_at)}`);
    render(sub);
  } catch (err) {
    showError(`Could not load the submission: ${problemText(err)}`);
    return;
  }
  const live = document.getElementById("live");
  follow(`/v1/ws/submissions/${sid}`, onEvent, (state) => { live.textContent = state; });
  loadHistory();
}

if (requireToken()) start();
