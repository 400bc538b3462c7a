// The exams list: one page of the tenant's exams at a time.
import { api, el, fmtTime, problemText, requireToken, showError } from "./common.js";

const PAGE_SIZE = 20;
let page = 1;
const tbody = document.querySelector("#exams-table tbody");
const status = document.getElementById("exams-status");

async function load() {
  status.textContent = "Loading…";
  try {
    const { data } = await api(`/v1/exams?page=${page}&page_size=${PAGE_SIZE}&sort_order=desc`);
    tbody.replaceChildren(...data.items.map((exam) => el("tr", {},
      el("td", {}, el("a", { href: `/ui/exams/${exam.id}` }, exam.title)),
      el("td", {}, fmtTime(exam.created_at)),
      el("td", { class: "mono" }, exam.id))));
    status.textContent = data.items.length ? `${data.items.length} exams on page ${page}` : "No exams yet.";
    document.getElementById("page-label").textContent = `Page ${page}`;
    document.getElementById("prev").disabled = page <= 1;
    document.getElementById("next").disabled = !data.has_more;
  } catch (err) {
    showError(`Could not load the exams: ${problemText(err)}`);
    status.textContent = "";
  }
}

if (requireToken()) {
  document.getElementById("prev").addEventListener("click", () => { page -= 1; load(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; load(); });
  load();
}
