// gradeflow dashboard: the token, API calls, live feeds and DOM helpers shared by every page.
const KEY = "gradeflow.token";

export function token() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
}

export function saveToken(value, remember) {
  sessionStorage.setItem(KEY, value);
  if (remember) localStorage.setItem(KEY, value); else localStorage.removeItem(KEY);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch (_) {
    return {};
  }
}

export function toSignIn(reason) {
  const next = location.pathname + location.search + location.hash;
  const q = new URLSearchParams({ next });
  if (reason) q.set("reason", reason);
  location.assign("/ui/signin?" + q.toString());
}

/** Every page but sign-in: no token, no page. Shows who is signed in. */
export function requireToken() {
  const t = token();
  if (!t) {
    toSignIn("");
    return false;
  }
  showWho();
  return true;
}

/** Show who is signed in, with the sign-out button (nothing without a token). */
export function showWho() {
  const t = token();
  if (!t) return;
  const c = claims(t);
  const who = document.getElementById("who");
  document.getElementById("who-text").textContent = `${c.sub || "?"} · ${c.tenant || "?"} · ${(c.roles || []).join(", ")}`;
  who.hidden = false;
  document.getElementById("signout").addEventListener("click", () => {
    clearToken();
    location.assign("/ui/signin");
  });
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** Call the API with the bearer token; JSON in, JSON out; a 401 goes back to sign-in. */
export async function api(path, { method = "GET", body, headers = {}, raw = false, signInOn401 = true } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  const t = token();
  if (t) init.headers.Authorization = "Bearer " + t;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && signInOn401) {
    clearToken();
    toSignIn("Your token was refused (missing, invalid or expired). Sign in again.");
    throw new ApiError(401, { detail: "signed out" });
  }
  if (raw) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return { status: response.status, data };
}

/** A problem's message, naming the fields it lists. */
export function problemText(err) {
  if (!(err instanceof ApiError)) return String(err && err.message || err);
  const fields = (err.problem.errors || []).map((e) => `${e.field}: ${e.message}`);
  return [err.message, ...fields].join(" · ");
}

export function showError(message) {
  const box = document.getElementById("page-error");
  box.textContent = message;
  box.hidden = !message;
}

const FINAL_CLOSE = { 4401: "the token was refused", 4403: "this token may not follow this feed",
  4404: "not found", 4429: "too many live feeds open for this tenant" };

/**
 * Follow a live feed (``/v1/ws/...``): ``onEvent(message)`` for the snapshot and every event.
 * Reconnects with back-off (resuming after the last stream id it saw); gives up on refusals.
 */
export function follow(path, onEvent, onState = () => {}) {
  let lastStreamId = null;
  let socket = null;
  let attempt = 0;
  let stopped = false;
  const open = () => {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", token());
    if (lastStreamId) url.searchParams.set("last_event_id", lastStreamId);
    socket = new WebSocket(url);
    socket.addEventListener("open", () => { attempt = 0; onState("live"); });
    socket.addEventListener("message", (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch (_) { return; }
      if (msg.stream_id) lastStreamId = msg.stream_id;
      onEvent(msg);
    });
    socket.addEventListener("close", (e) => {
      if (stopped) return;
      if (e.code === 4401) { clearToken(); toSignIn("Your token was refused by the live feed."); return; }
      if (FINAL_CLOSE[e.code]) { onState(`live updates off: ${FINAL_CLOSE[e.code]}`); return; }
      attempt += 1;
      if (attempt > 6) { onState("live updates off: reload the page to retry"); return; }
      onState("reconnecting…");
      setTimeout(open, Math.min(30000, 500 * 2 ** attempt));
    });
  };
  open();
  addEventListener("pagehide", () => { stopped = true; if (socket) socket.close(1000); });
  return { stop() { stopped = true; if (socket) socket.close(1000); } };
}

/** Build an element: ``el("a", {href: "/x", class: "c"}, "text", child)``. Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function fmtPoints(n) {
  if (n === null || n === undefined) return "–";
  return String(Math.round(Number(n) * 100) / 100);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

export function fmtAnswer(value) {
  if (value === null || value === undefined) return "(no answer)";
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.every((v) => typeof v === "string")) return value.join(", ");
  return JSON.stringify(value);
}

export function badge(status) {
  return el("span", { class: `badge s-${status}`, "data-status": status }, status);
}

/** A ``<progress>`` with its text, for ``done`` of ``total`` questions (``graded`` ids when the feed names them). */
export function progressView(done, total, questionIds = [], graded = null) {
  const wrap = el("span", { class: "progress" });
  const label = total ? `${done}/${total} questions graded` : "waiting to start";
  wrap.append(el("progress", { max: String(total || 1), value: String(total ? done : 0), "aria-label": label }),
    el("span", { class: "progress-text" }, total ? `${done}/${total}` : "–"));
  if (graded && questionIds.length) {
    const list = el("span", { class: "chips", role: "list", "aria-label": "Questions" });
    for (const q of questionIds) {
      const isDone = graded.has(q);
      list.append(el("span", { role: "listitem", class: isDone ? "chip done" : "chip",
        title: `${q}: ${isDone ? "graded" : "not graded yet"}` }, `${q}${isDone ? " ✓" : ""}`));
    }
    wrap.append(list);
  }
  return wrap;
}

export const SETTLED = new Set(["completed", "needs_review", "failed", "needs_intervention"]);
export const STATUS_EVENTS = new Set(["submission.received", "submission.status_changed", "submission.graded",
  "submission.reviewed", "submission.retried"]);

/** Run ``fn`` once, ``ms`` after the last call (per key). */
export function debouncer(ms) {
  const timers = new Map();
  return (key, fn) => {
    clearTimeout(timers.get(key));
    timers.set(key, setTimeout(() => { timers.delete(key); fn(); }, ms));
  };
}

/** A one-off Idempotency-Key for a write (a retried click replays the first answer). */
export function idempotencyKey() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/[^A-Za-z0-9_.:-]/g, "");
}
