"""Accessibility checks run inside a page: labelled controls, named buttons and links, text contrast (WCAG AA)."""

from __future__ import annotations

from typing import Any

A11Y_JS = r"""
() => {
  const problems = [];
  const visible = (el) => {
    const s = getComputedStyle(el);
    return s.display !== "none" && s.visibility !== "hidden" && el.getClientRects().length > 0;
  };
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
    + (el.className ? "." + String(el.className).split(" ").join(".") : "");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (!visible(el) || el.type === "hidden") continue;
    if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby")) {
      problems.push("unlabelled control " + describe(el));
    }
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (visible(el) && !(el.textContent.trim() || el.getAttribute("aria-label"))) {
      problems.push("nameless " + describe(el));
    }
  }
  for (const el of document.querySelectorAll("img")) if (!el.hasAttribute("alt")) problems.push("img without alt");
  for (const el of document.querySelectorAll("progress")) {
    if (visible(el) && !el.getAttribute("aria-label")) problems.push("unlabelled progress");
  }
  const rgb = (text) => (text.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !el || seen.has(el) || !visible(el)) continue;
    if (el.closest(".visually-hidden, .skip")) continue;
    seen.add(el);
    const s = getComputedStyle(el);
    const fg = lum(rgb(s.color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(s.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)} of ${describe(el)}: "${el.textContent.trim().slice(0, 30)}"`);
    }
  }
  return problems;
}
"""
"""Returns a list of problems: unlabelled form controls, nameless buttons/links, images without alt,
unlabelled progress bars, and text whose contrast with its background is under WCAG AA (4.5:1, or
3:1 for large text)."""


async def a11y_problems(page: Any) -> list[str]:
    """The accessibility problems of what ``page`` shows now (empty when none)."""
    return list(await page.evaluate(A11Y_JS))
