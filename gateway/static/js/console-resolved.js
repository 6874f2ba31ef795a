// "Recently resolved" (GET /api/mod/resolved, then live `report.resolved`), each with Reopen, and
// the undo bar: for UNDO_MS after a decision made here, Undo (or `u`) reopens the case(s).

import { h } from "./dom.js";
import { DONE, snippet, targetLabel } from "./console-case.js";

const KEEP = 20;
export const UNDO_MS = 10000;

/** onReopen(view): reopen a resolved case (the console sends the command). */
export function resolvedPanel({ rest, onReopen, onLoadError }) {
  const listEl = document.getElementById("resolved");
  const emptyEl = document.getElementById("resolved-empty");
  let order = [];                 // case_ids, newest decision first
  const views = new Map();        // case_id -> resolved view
  const busy = new Set();

  function merge(view) {
    const old = views.get(view.case_id);
    if (old && old.version > view.version) return;
    if (view.state === "resolved") {
      views.set(view.case_id, view);
      if (!old || old.version !== view.version) order = [view.case_id, ...order.filter((id) => id !== view.case_id)];
    } else {
      views.delete(view.case_id);
      order = order.filter((id) => id !== view.case_id);
    }
    order.splice(KEEP);
    render();
  }

  async function load() {
    try {
      const list = await rest.get(`/api/mod/resolved?limit=${KEEP}`);
      for (const v of list.reverse()) merge(v);   // oldest first, so the newest ends on top
    } catch (err) {
      onLoadError(err);
    }
  }

  function render() {
    const done = order.map((id) => views.get(id)).filter(Boolean);
    listEl.replaceChildren(...done.map((v) => h("li", { class: "resolved-item", dataset: { caseId: v.case_id } },
      h("span", { class: `badge badge-${v.resolution || "done"}` }, DONE[v.resolution] || "Resolved"),
      v.appeal_outcome ? h("span", { class: "badge badge-appeal" }, `appeal ${v.appeal_outcome}`) : null,
      " ",
      h("span", { class: "resolved-text" }, `${targetLabel(v)} by ${v.author_id || "unknown"}: ${snippet(v.text, 80)}`),
      h("span", { class: "muted" }, ` by ${v.resolved_by}${v.note ? ` · “${v.note}”` : ""}`),
      v.message ? h("span", { class: "muted resolved-message" }, " · message sent to the author") : null,
      h("button", { type: "button", class: "btn btn-quiet btn-small", disabled: busy.has(v.case_id),
                    "aria-label": `Reopen: ${snippet(v.text, 40)}`,
                    onclick: async () => {
                      busy.add(v.case_id);
                      render();
                      try { await onReopen(v); } finally { busy.delete(v.case_id); render(); }
                    } }, "Reopen"))));
    emptyEl.hidden = done.length > 0;
  }

  return { merge, load, has: (id) => views.has(id) };
}

/** The undo bar. show(text, entries) offers Undo for UNDO_MS; undo() runs onUndo(entries) once. */
export function undoBar({ onUndo }) {
  const el = document.getElementById("undo");
  let entries = null;
  let timer = null;
  let started = 0;

  function hide() {
    clearTimeout(timer);
    entries = null;
    el.hidden = true;
    el.replaceChildren();
  }

  function show(text, what) {
    hide();
    entries = what;
    started = Date.now();
    const count = h("span", { class: "undo-left muted" });
    const tick = () => {
      const left = Math.ceil((UNDO_MS - (Date.now() - started)) / 1000);
      if (left <= 0) { hide(); return; }
      count.textContent = ` (${left} s)`;
      timer = setTimeout(tick, 250);
    };
    el.append(
      h("span", { class: "undo-text" }, text),
      h("button", { type: "button", class: "btn btn-small btn-undo", "aria-keyshortcuts": "u", onclick: undo },
        "Undo", h("kbd", { class: "key", "aria-hidden": "true" }, "u")),
      count);
    el.hidden = false;
    tick();
  }

  function undo() {
    if (!entries) return false;
    const what = entries;
    hide();
    onUndo(what);
    return true;
  }

  return { show, undo, hide, active: () => entries !== null };
}
