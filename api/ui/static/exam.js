// The exam page: counts by status, the exam's submissions one page at a time, live progress from the exam feed.
import {
  api, badge, debouncer, el, fmtPoints, fmtTime, follow, problemText, progressView, requireToken, SETTLED,
  showError, STATUS_EVENTS,
} from "./common.js";

const PAGE_SIZE = 50;
const STATUSES = ["queued", "grading", "needs_review", "completed", "failed", "needs_intervention"];
const FIELDS = "id,student_id,status,total,max_total,updated_at";
const main = document.getElementById("main");
const examId = main.dataset.examId;
const table = document.getElementById("subs-table");
const tbody = table.querySelector("tbody");
const listStatus = document.getElementById("subs-status");
const later = debouncer(300);
const seldom = debouncer(1000);  // the counts: at most one read a second however busy the exam is

let questionIds = [];
let page = 1;
let filter = "";
const rows = new Map();      // submission id -> {sub, cells}
const progress = new Map();  // submission id -> {done, total, graded: Set | null}

function progressOf(sub) {
  const p = progress.get(sub.id);
  const total = questionIds.length;
  if (SETTLED.has(sub.status)) return progressView(total, total, questionIds, new Set(questionIds));
  if (!p) return sub.status === "queued" ? progressView(0, total, questionIds, null) : el("span", {}, "grading…");
  return progressView(p.done, p.total || total, questionIds, p.graded);
}

function paint(id) {
  const row = rows.get(id);
  if (!row) return;
  const { sub, cells } = row;
  row.tr.dataset.status = sub.status;
  cells.status.replaceChildren(badge(sub.status));
  cells.total.textContent = sub.total === null || sub.total === undefined ? "–"
    : `${fmtPoints(sub.total)} / ${fmtPoints(sub.max_total)}`;
  cells.progress.replaceChildren(progressOf(sub));
  cells.updated.textContent = fmtTime(sub.updated_at);
}

function renderRows(items) {
  rows.clear();
  const fragment = document.createDocumentFragment();
  for (const sub of items) {
    const cells = { status: el("td"), total: el("td", { class: "num" }), progress: el("td"), updated: el("td") };
    const tr = el("tr", { "data-submission-id": sub.id },
      el("th", { scope: "row" }, el("a", { href: `/ui/submissions/${sub.id}` }, sub.student_id)),
      cells.status, cells.total, cells.progress, cells.updated);
    rows.set(sub.id, { sub, cells, tr });
    fragment.append(tr);
  }
  tbody.replaceChildren(fragment);
  for (const id of rows.keys()) paint(id);
}

function fetchPage() {
  const q = new URLSearchParams({ exam_id: examId, page: String(page), page_size: String(PAGE_SIZE),
    sort_by: "created_at", sort_order: "desc", fields: FIELDS });
  if (filter) q.set("status", filter);
  return api(`/v1/submissions?${q}`);
}

function showPage(data) {
  renderRows(data.items);
  listStatus.textContent = data.items.length
    ? `Showing ${(page - 1) * PAGE_SIZE + 1}–${(page - 1) * PAGE_SIZE + data.items.length} (page ${page})`
    : "No submissions" + (filter ? ` in status ${filter}` : "") + ".";
  document.getElementById("page-label").textContent = `Page ${page}`;
  document.getElementById("prev").disabled = page <= 1;
  document.getElementById("next").disabled = !data.has_more;
  table.dataset.loaded = "true";
  if (!performance.getEntriesByName("gradeflow:table-rendered").length) performance.mark("gradeflow:table-rendered");
}

async function loadPage(pending = fetchPage()) {
  table.setAttribute("aria-busy", "true");
  try {
    showPage((await pending).data);
  } catch (err) {
    showError(`Could not load the submissions: ${problemText(err)}`);
  } finally {
    table.setAttribute("aria-busy", "false");
  }
}

function renderCounts(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const items = STATUSES.map((s) => el("li", { "data-status": s }, badge(s), el("span", { class: "count" }, String(counts[s] || 0))));
  items.push(el("li", { "data-status": "total" }, el("strong", {}, "total"), el("span", { class: "count" }, String(total))));
  document.getElementById("counts").replaceChildren(...items);
}

async function loadCounts() {
  try {
    const { data } = await api(`/v1/exams/${examId}/counts`);
    renderCounts(data.submissions_by_status);
  } catch (err) {
    showError(`Could not count the submissions: ${problemText(err)}`);
  }
}

async function refreshRow(id) {
  try {
    const { data } = await api(`/v1/submissions/${id}`);
    const row = rows.get(id);
    if (!row) return;
    Object.assign(row.sub, { status: data.status, total: data.total, max_total: data.max_total, updated_at: data.updated_at });
    paint(id);
  } catch (err) {
    if (err.status !== 404) showError(`Could not refresh a submission: ${problemText(err)}`);
  }
}

function onEvent(msg) {
  const id = msg.submission_id;
  const payload = msg.payload || {};
  if (msg.event_type === "snapshot") {
    // the feed follows from now on: read the page on screen again, or a change between the page's read
    // and this subscription (or during a reconnect) would never show
    if (payload.submissions_by_status) renderCounts(payload.submissions_by_status);
    later("page", loadPage);
    return;
  }
  if (msg.event_type === "grading.progress" && id) {
    const graded = Array.isArray(payload.graded_questions) ? new Set(payload.graded_questions) : null;
    const done = graded ? graded.size : Number(payload.questions_done || 0);
    progress.set(id, { done, total: Number(payload.questions_total || 0), graded });
    const row = rows.get(id);
    if (row) {
      if (row.sub.status === "queued") row.sub.status = "grading";
      paint(id);
    }
    return;
  }
  if (!STATUS_EVENTS.has(msg.event_type)) return;
  seldom("counts", loadCounts);
  const row = id ? rows.get(id) : null;
  if (row) {
    // the events carry the new status (and a grading's total): the row changes without a read; a review
    // (its total may change) or an event without a status reads the submission again
    if (payload.status) row.sub.status = payload.status;
    if (payload.total !== undefined) Object.assign(row.sub, { total: payload.total, max_total: payload.max_total });
    if (msg.occurred_at) row.sub.updated_at = msg.occurred_at;
    paint(id);
    if (!payload.status || msg.event_type === "submission.reviewed") later(`row:${id}`, () => refreshRow(id));
  } else if (page === 1 && (msg.event_type === "submission.received" ? (!filter || filter === "queued")
    : (filter && payload.status === filter))) {
    later("page", loadPage);  // a new row belongs on the page on screen
  }
}

async function downloadCsv(e) {
  e.preventDefault();
  const link = e.currentTarget;
  try {
    const response = await api(link.getAttribute("href"), { raw: true, headers: { Accept: "text/csv" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const a = el("a", { href: url, download: `grades-${examId}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (err) {
    showError(`Could not download the grades: ${problemText(err)}`);
  }
}

async function start() {
  const firstPage = fetchPage();  // the exam, its first page and its counts are read side by side
  firstPage.catch(() => {});     // (its failure is reported by loadPage below)
  const counted = loadCounts();
  try {
    const { data: exam } = await api(`/v1/exams/${examId}`);
    questionIds = exam.questions.map((q) => q.id);
    document.getElementById("exam-title").textContent = exam.title;
    document.title = `${exam.title} · gradeflow`;
    document.getElementById("exam-meta").textContent = `${questionIds.length} questions · created ${fmtTime(exam.created_at)}`;
  } catch (err) {
    showError(`Could not load the exam: ${problemText(err)}`);
    return;
  }
  const live = document.getElementById("live");
  follow(`/v1/ws/exams/${examId}`, onEvent, (state) => { live.textContent = state; });
  document.getElementById("status-filter").addEventListener("change", (e) => { filter = e.target.value; page = 1; loadPage(); });
  document.getElementById("prev").addEventListener("click", () => { page -= 1; loadPage(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; loadPage(); });
  const csv = document.getElementById("csv-link");
  if (csv) csv.addEventListener("click", downloadCsv);
  await Promise.all([loadPage(firstPage), counted]);
}

if (requireToken()) start();
