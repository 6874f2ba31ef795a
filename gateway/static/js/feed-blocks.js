// The member's block list as this page knows it. The server holds the real list (and filters
// reads and live events by it) but hands it out only in the answers to `block`/`unblock` and in
// `blocks.changed`, so the page keeps its last copy, with the names it saw, in localStorage.

import { h } from "./dom.js";

export class Blocks {
  constructor(me) {
    this.key = `vybe.feed.blocked.${me}`;
    this.ids = new Set();
    this.names = {};
    try {
      const saved = JSON.parse(localStorage.getItem(this.key) || "null");
      if (saved) {
        this.ids = new Set(saved.ids || []);
        this.names = saved.names || {};
      }
    } catch { /* a damaged copy: start empty, the next block answer restores it */ }
  }

  has(id) {
    return Boolean(id) && this.ids.has(id);
  }

  name(id) {
    return this.names[id] || id;
  }

  /** Take the server's whole list; returns {added, removed} against the previous one. */
  replace(list, knownName = {}) {
    const next = new Set(list);
    const added = [...next].filter((id) => !this.ids.has(id));
    const removed = [...this.ids].filter((id) => !next.has(id));
    this.ids = next;
    Object.assign(this.names, knownName);
    for (const id of Object.keys(this.names)) if (!next.has(id)) delete this.names[id];
    try {
      localStorage.setItem(this.key, JSON.stringify({ ids: [...next], names: this.names }));
    } catch { /* storage full or off: the list still holds for this page */ }
    return { added, removed };
  }
}

/** Render the "Blocked (N)" disclosure into `box`; `onUnblock(id)` is the way back. */
export function renderBlocked(box, blocks, onUnblock) {
  const ids = [...blocks.ids].sort((a, b) => blocks.name(a).localeCompare(blocks.name(b)));
  box.hidden = ids.length === 0;
  const wasOpen = box.querySelector("details")?.open;
  const details = h("details", { class: "blocked" },
    h("summary", { class: "btn btn-quiet" }, `Blocked (${ids.length})`),
    h("div", { class: "blocked-panel" },
      h("p", { class: "muted small" }, "You don't see their vybes or comments, and they are not told."),
      h("ul", { class: "blocked-list" }, ids.map((id) => h("li", { class: "blocked-item", dataset: { userId: id } },
        h("span", { class: "author" }, blocks.name(id)),
        h("button", { type: "button", class: "btn btn-chip", "aria-label": `Unblock ${blocks.name(id)}`,
                      onclick: () => onUnblock(id) }, "Unblock"))))));
  if (wasOpen) details.open = true;
  box.replaceChildren(details);
}
