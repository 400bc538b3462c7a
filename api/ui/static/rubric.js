// How a question's rubric (its answer key) reads on the review and submission pages.
import { el, fmtPoints } from "./common.js";

export function rubricView(question) {
  const r = question && question.rubric;
  if (!r) return el("p", { class: "hint" }, "No rubric shown.");
  if (question.type === "choice") {
    return el("ul", { class: "criteria" },
      el("li", {}, `Correct: ${(r.correct || []).join(", ") || "–"}`),
      el("li", {}, `Options: ${(r.options || []).join(", ")}`),
      r.partial_credit === false ? el("li", {}, "No partial credit") : null);
  }
  if (question.type === "numeric") {
    const tol = [r.abs_tol ? `± ${r.abs_tol}` : "", r.rel_tol ? `± ${r.rel_tol * 100}%` : ""].filter(Boolean).join(" or ");
    return el("ul", { class: "criteria" }, el("li", {}, `Expected ${r.value}${tol ? " " + tol : " exactly"}`));
  }
  const criteria = r.criteria || [];
  if (!criteria.length) return el("p", { class: "hint" }, "No criteria.");
  return el("ul", { class: "criteria" }, criteria.map((c) => el("li", { "data-criterion": c.id },
    el("strong", {}, `${c.description}`), ` (${fmtPoints(c.points)} pts)`,
    (c.keywords || []).length ? el("span", { class: "hint" }, ` · keywords: ${c.keywords.join(", ")}`) : null)));
}

export function criteriaOutcome(result) {
  const met = result.criteria_met || [];
  const missed = result.criteria_missed || [];
  if (!met.length && !missed.length) return null;
  return el("p", { class: "hint" }, met.length ? `Met: ${met.join(", ")}` : "", met.length && missed.length ? " · " : "",
    missed.length ? `Missed: ${missed.join(", ")}` : "");
}
