// The console's Care tab: posts that read as their author's own self-harm disclosure. Not abuse:
// the post stays visible and its author was already sent the care message; a moderator may reach
// out ("I'm reaching out" claims the case, so no second moderator contacts the member), then closes the case
// with a note (kept in the audit log). Loaded from REST, then live from `care.opened`, `care.claimed`,
// `care.released` and `care.closed` on mod:flagged, merged by the case `version` like the abuse queue.

import { allPages } from "./api.js";
import { claimActive } from "./console-rank.js";
import { announce, h, timeEl } from "./dom.js";

const CLOSED_KEEP = 10;

/** The self-harm score as a plain word: every case is over the care threshold already, so the
 *  word only says how clearly the text reads as a disclosure (the number is in the tooltip). */
export function likelihood(score) {
  if (score >= 0.9) return "very likely";
  if (score >= 0.7) return "likely";
  return "possible";
}

/**
 * rest: the api() client; onCount(n): the number of open cases changed;
 * onLoadError(err): a load failed (401/403 sign the page out; the caller decides).
 */
export function carePanel({ rest, me, onCount, onLoadError }) {
  const cases = new Map();     // care_id -> latest view (open and closed)
  const drafts = new Map();    // care_id -> note text
  const errors = new Map();    // care_id -> last error text
  const busy = new Set();      // care_id with a close in flight
  const closedHere = [];       // care_ids closed while this page was open, newest first
  const listEl = document.getElementById("care-list");
  const closedEl = document.getElementById("care-closed");
  let loading = null;

  const touched = new Map();   // care_id -> tick of its last merge
  let tick = 0;

  function merge(view, render = true) {
    const old = cases.get(view.care_id);
    if (old && old.version > view.version) return;   // stale snapshot or late event
    cases.set(view.care_id, view);
    touched.set(view.care_id, ++tick);
    if (view.state !== "open" && old?.state === "open") {
      if (!closedHere.includes(view.care_id)) closedHere.unshift(view.care_id);
      closedHere.splice(CLOSED_KEEP);
    }
    if (render) renderAll();
  }

  async function reload() {
    if (loading) return loading;
    loading = (async () => {
      try {
        const asked = tick;
        const { list, more } = await allPages(rest, "/api/mod/care", "care_id");
        const open = new Set(list.map((v) => v.care_id));
        for (const v of list) merge(v, false);
        // Open here but not in the snapshot: closed meanwhile (its event may be lost), unless an event changed
        // it while the snapshot was in flight, or the snapshot stopped short of it.
        const last = list.length ? Date.parse(list[list.length - 1].opened_at) : null;
        for (const v of cases.values()) {
          if (v.state === "open" && !open.has(v.care_id) && (touched.get(v.care_id) ?? 0) <= asked
              && !(more && last !== null && Date.parse(v.opened_at) >= last)) {
            v.state = "closed";
          }
        }
        renderAll();
      } catch (err) {
        onLoadError(err);
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function renderAll() {
    const open = [...cases.values()].filter((v) => v.state === "open")
      .sort((a, b) => Date.parse(a.opened_at) - Date.parse(b.opened_at));
    // Keep focus on the same control across a re-render.
    const active = listEl.contains(document.activeElement) ? document.activeElement : null;
    const where = active && { id: active.closest("[data-care-id]")?.dataset.careId, key: active.dataset.focusKey,
                              from: active.selectionStart, to: active.selectionEnd };
    listEl.replaceChildren(...open.map((v) => h("li", { class: "care-item" }, careCase(v))));
    document.getElementById("care-empty").hidden = open.length > 0;
    const again = where?.id && listEl.querySelector(`[data-care-id="${where.id}"] [data-focus-key="${where.key}"]`);
    if (again) {
      again.focus();
      if (typeof where.from === "number") again.setSelectionRange(where.from, where.to);
    }
    renderClosed();
    onCount(open.length);
  }

  function renderClosed() {
    const done = closedHere.map((id) => cases.get(id)).filter((v) => v && v.state !== "open");
    closedEl.replaceChildren(...done.map((v) =>
      h("li", { class: "resolved-item care-closed-item", dataset: { careId: v.care_id } },
        h("span", { class: "badge badge-care" }, "Closed"), " ",
        h("span", { class: "resolved-text" }, snippet(v.text)),
        h("span", { class: "muted" }, ` by ${v.closed_by || "a moderator"}${v.note ? ` · “${v.note}”` : ""}`))));
    document.getElementById("care-closed-empty").hidden = done.length > 0;
  }

  function careCase(v) {
    const id = v.care_id;
    const titleId = `care-${id}-title`;
    const noteId = `care-${id}-note`;
    const isBusy = busy.has(id);
    const held = claimActive(v);
    const mine = held && v.claimed_by === me;
    const othersHold = held && !mine;
    const note = h("input", { type: "text", id: noteId, class: "note-input", maxlength: 500, autocomplete: "off",
                              dataset: { focusKey: "note" }, placeholder: "Optional, kept in the audit log" });
    note.value = drafts.get(id) || "";
    note.addEventListener("input", () => drafts.set(id, note.value));
    note.addEventListener("keydown", (ev) => { if (ev.key === "Enter") close(id); });
    const word = likelihood(Number(v.score));
    return h("article", { class: "care-case", "aria-labelledby": titleId, tabindex: "-1",
                          dataset: { careId: id, targetId: v.target_id, state: v.state } },
      h("header", { class: "case-head" },
        h("h3", { id: titleId, class: "case-title" },
          v.target_type === "comment" ? "Comment" : "Vybe", " by ",
          h("span", { class: "author" }, v.author_id || "unknown"),
          v.is_anonymous ? h("span", { class: "badge badge-anon", title: "Members do not know who wrote this: reach out"
                                         + " privately, never where others would learn who the author is" },
                             "posted anonymously") : null),
        h("div", { class: "case-meta" },
          h("span", { class: "badge badge-care care-likelihood", title: `self-harm score ${Number(v.score).toFixed(2)}`,
                      dataset: { score: Number(v.score).toFixed(2) } }, `disclosure: ${word}`),
          h("span", { class: "muted" }, "opened ", timeEl(v.opened_at)))),
      h("blockquote", { class: "case-text" }, v.text ?? "(no text: the post was deleted)"),
      h("p", { class: "care-status muted" },
        "Still visible to others. The author was sent the care message with helpline resources."),
      held ? h("p", { class: `care-claim${mine ? " is-mine" : ""}`, role: "status" },
               mine ? "You are reaching out" : `${v.claimed_by} is reaching out`,
               v.claim_expires_at ? h("span", { class: "muted" }, " · until ", timeEl(v.claim_expires_at)) : null)
           : null,
      errors.get(id) ? h("p", { class: "case-error", role: "alert" }, errors.get(id)) : null,
      h("div", { class: "case-actions" },
        h("button", { type: "button", class: "btn btn-claim", disabled: isBusy || othersHold,
                      dataset: { focusKey: "claim" }, onclick: () => claim(id, mine) },
          mine ? "Release" : "I'm reaching out"),
        mine ? h("button", { type: "button", class: "btn", disabled: isBusy, dataset: { focusKey: "extend" },
                             title: "Hold the case longer: you are still in touch with the member",
                             onclick: () => claim(id, false) }, "Still reaching out") : null,
        h("div", { class: "resolve" },
          h("label", { for: noteId, class: "note-label" }, "What you did"),
          note,
          h("button", { type: "button", class: "btn btn-care", disabled: isBusy || othersHold,
                        title: othersHold ? `${v.claimed_by} is reaching out: leave the member to them` : null,
                        dataset: { focusKey: "close" }, onclick: () => close(id) }, "Close"))));
  }

  async function claim(id, release) {
    const v = cases.get(id);
    if (!v || busy.has(id)) return;
    busy.add(id);
    errors.delete(id);
    renderAll();
    try {
      merge(await rest.post(`/api/mod/care/${encodeURIComponent(id)}/claim`,
                            { version: v.version, ...(release ? { release: true } : {}) }), false);
      announce(release ? "Released: another moderator may reach out." : "Claimed: others will leave the member to you.");
    } catch (err) {
      errors.set(id, err.code === "conflict"
        ? `Someone else changed this case first: ${err.message}. The list was reloaded.`
        : `Not done (${err.code}): ${err.message}`);
      if (err.code === "conflict" || err.code === "not_found") reload();
    } finally {
      busy.delete(id);
      renderAll();
    }
  }

  // One idempotency key per care case and version, kept until the close succeeds: trying again after a lost
  // answer (a network error, a 503 after a COMMIT whose answer never came) gets the first result, `replayed`.
  const keys = new Map();   // `${care_id}@${version}` -> the close's id

  async function close(id) {
    const v = cases.get(id);
    if (!v || busy.has(id)) return;
    if (claimActive(v) && v.claimed_by !== me) {   // Enter in the note too, not only the disabled button
      errors.set(id, `${v.claimed_by} is reaching out: leave the member to them, or wait until their claim lapses.`);
      renderAll();
      return;
    }
    const note = (drafts.get(id) || "").trim();
    const slot = `${id}@${v.version}`;
    if (!keys.has(slot)) {  // randomUUID needs a secure context (https or localhost): a random fallback otherwise
      keys.set(slot, `care-close-${crypto.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`}`);
    }
    busy.add(id);
    errors.delete(id);
    renderAll();
    try {
      const view = await rest.post(`/api/mod/care/${encodeURIComponent(id)}/close`,
                                   { version: v.version, id: keys.get(slot), ...(note ? { note } : {}) });
      keys.delete(slot);
      drafts.delete(id);
      merge(view, false);
      announce("Care case closed.");
      document.getElementById("care-title").focus();
    } catch (err) {
      errors.set(id, err.code === "conflict"
        ? `Someone else changed this case first: ${err.message}. The list was reloaded.`
        : `Not closed (${err.code}): ${err.message}${err.retryAfter != null ? " Try again: it is safe." : ""}`);
      if (err.code === "conflict" || err.code === "not_found") reload();
    } finally {
      busy.delete(id);
      renderAll();
    }
  }

  return {
    merge,
    reload,
    /** Claims lapse on their own, unannounced: redraw now and then so a lapsed one frees the buttons. */
    refresh() {
      if ([...cases.values()].some((v) => v.state === "open" && v.claimed_by)) renderAll();
    },
    /** A care event from mod:flagged (`care.opened`, `care.claimed`, `care.released`, `care.closed`). */
    onEvent(msg) {
      const fresh = !cases.has(msg.data.care_id);
      merge(msg.data);
      if (msg.event === "care.opened" && fresh) announce("A new care case arrived in the Care tab.");
    },
  };
}

function snippet(text, n = 90) {
  if (!text) return "(no text)";
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
