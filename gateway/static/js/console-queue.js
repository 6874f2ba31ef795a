// The console's queue list and detail pane: which open cases show (filters, sort), the selected one
// and its detail, the counts and the bulk bar's state. Rows and the pane are rebuilt only when what
// they show changed, so a click in progress, the focus and typed notes survive live events.

import { actionsFor, blockedReason, caseDetail, caseRow } from "./console-case.js";
import { SORTS, appOf, claimActive, flaggedLabels, isAppeal, matches } from "./console-rank.js";
import { h } from "./dom.js";

const TEACHES = new Set(["shared_vybe", "comment", "app_item"]);   // user cases carry no text to learn from
const $ = (id) => document.getElementById(id);

/**
 * state: {cases, drafts, errors, busy, checked, contexts, picks, filters, loadedOnce} (shared with
 * mod.js, which changes it and calls renderAll); onClaim(id, release), onAct(id, action): the commands;
 * onLoadError(err): a context load was refused (401/403).
 */
export function queueView(state, { me, rest, onClaim, onAct, onLoadError, onVanished }) {
  const { cases, drafts, errors, busy, checked, contexts, picks } = state;
  const queueEl = $("queue");
  const nodes = new Map();        // case_id -> <li>
  const rowKeys = new WeakMap();  // <li> -> what its row shows (rebuilt when it changes)
  let order = [];                 // the shown case_ids, in order
  let selected = null;
  let selIndex = 0;
  let leaving = null;   // the case this moderator is deciding: when it leaves the list, go on to the next
  let paused = false;   // the selected case left by someone else's doing: nothing is selected until j/k
  let detail = { key: null, el: null };

  /** One option per app seen in the queue (the filter lists sister apps as their cases arrive). */
  function syncApps(open) {
    const select = document.getElementById("f-app");
    if (!select) return;
    const have = new Set([...select.options].map((o) => o.value));
    for (const app of new Set(open.map(appOf))) {
      if (!have.has(app)) select.append(h("option", { value: app }, app));
    }
  }

  function renderAll() {
    const open = [...cases.values()].filter((v) => v.state === "open");
    syncApps(open);
    const shown = open.filter((v) => matches(v, state.filters, me)).sort(SORTS[state.filters.sort] || SORTS.severity);
    order = shown.map((v) => v.case_id);
    if (!order.includes(selected)) {
      // Gone by another moderator's decision (or out of the filters): a key pressed now must not decide a case the
      // moderator never read, so nothing is selected until they move on (j/k). Gone by their own decision: next.
      if (selected !== null && selected !== leaving) {
        paused = true;
        onVanished?.(cases.get(selected));
      }
      selected = paused ? null : order[Math.min(selIndex, order.length - 1)] ?? null;
      leaving = null;
    }
    if (selected !== null) selIndex = Math.max(0, order.indexOf(selected));
    const keep = new Set(order);
    for (const [id, li] of nodes) {
      if (!keep.has(id)) { li.remove(); nodes.delete(id); }
    }
    shown.forEach((v, i) => {
      let li = nodes.get(v.case_id);
      if (!li) {
        li = h("li", { class: `case-item${state.loadedOnce ? " is-new" : ""}` });
        nodes.set(v.case_id, li);
      }
      renderCase(li, v);
      if (queueEl.children[i] !== li) queueEl.insertBefore(li, queueEl.children[i] || null);
    });
    if (selected) {
      ensureContext(selected);
      const next = order[selIndex + 1];
      if (next) ensureContext(next);   // the next case is ready when the moderator gets there
    }
    renderCounts(open, shown);
  }

  function renderCounts(open, shown) {
    const mine = open.filter((v) => claimActive(v) && v.claimed_by === me).length;
    const others = open.filter((v) => claimActive(v) && v.claimed_by !== me).length;
    $("count-open").textContent = open.length;
    $("tab-count-queue").textContent = open.length;
    $("count-unclaimed").textContent = open.length - mine - others;
    $("count-mine").textContent = mine;
    $("count-others").textContent = others;
    $("count-appeals").textContent = open.filter(isAppeal).length;
    $("queue-empty").hidden = open.length > 0 || state.incomplete;
    $("queue-incomplete").hidden = !state.incomplete;  // the last load failed: "empty" would be a lie
    $("filter-empty").hidden = !(open.length > 0 && shown.length === 0);
    $("shown-line").textContent = open.length
      ? `Showing ${shown.length} of ${open.length} open${state.truncated ? " (the oldest: more are waiting)" : ""} · ${
        $("f-sort").selectedOptions[0].textContent.toLowerCase()}`
      : "";
    const n = order.filter((id) => checked.has(id)).length;
    $("bulk-count").textContent = n ? `${n} selected` : "None selected";
    $("bulk-dismiss").disabled = $("bulk-hide").disabled = n === 0 || state.bulkRunning;  // one run at a time
    const all = $("check-all");
    all.checked = n > 0 && n === order.length;
    all.indeterminate = n > 0 && n < order.length;
    all.disabled = order.length === 0;
    document.title = open.length ? `(${open.length}) Vybe Live · Moderation` : "Vybe Live · Moderation";
  }

  function renderCase(li, v) {
    const id = v.case_id;
    const isSel = id === selected;
    let art = li.firstElementChild;
    if (!art) {
      art = h("article", { class: "case", tabindex: "-1" });
      li.append(art);
    }
    const held = claimActive(v);
    art.className = `case${isSel ? " is-selected" : ""}${held ? " is-claimed" : ""}${held && v.claimed_by === me ? " is-mine" : ""}`
      + `${isAppeal(v) ? " is-appeal" : ""}`;
    art.setAttribute("aria-labelledby", `case-${id}-row`);
    Object.assign(art.dataset, { caseId: id, targetId: v.target_id, state: v.state, claimedBy: held ? v.claimed_by : "" });
    // Rebuild the row only when what it shows changed: a click in progress, the focus and an open
    // labels picker survive the live events of other cases.
    const rowKey = [v.version, isSel, checked.has(id), busy.has(id), held, blockedReason(v, me) || ""].join("|");
    if (rowKeys.get(li) !== rowKey) {
      rowKeys.set(li, rowKey);
      renderRow(art, v, isSel);
    }
    const oldDetail = art.querySelector(":scope > .case-detail");
    if (!isSel) {
      oldDetail?.remove();
      return;
    }
    const el = detailFor(v);
    if (el !== oldDetail) {
      const active = oldDetail?.contains(document.activeElement) ? document.activeElement : null;
      if (oldDetail) oldDetail.replaceWith(el); else art.append(el);
      if (active?.dataset.focusKey) {
        const again = el.querySelector(`[data-focus-key="${active.dataset.focusKey}"]`);
        again?.focus();
        if (again && typeof active.selectionStart === "number") again.setSelectionRange(active.selectionStart, active.selectionEnd);
      }
    }
  }

  function renderRow(art, v, isSel) {
    const id = v.case_id;
    const focused = art.querySelector(":scope > .case-row")?.contains(document.activeElement)
      ? document.activeElement.dataset.focusKey : null;
    const row = caseRow(v, { me, selected: isSel, checked: checked.has(id), busy: busy.has(id),
                             picker: isSel ? null : pickerFor(v, "Labels: "),
                             onOpen: () => select(id, false), onCheck: (on) => check(id, on),
                             onAct: (action) => onAct(id, action) });
    const oldRow = art.querySelector(":scope > .case-row");
    if (oldRow) oldRow.replaceWith(row); else art.prepend(row);
    if (focused) row.querySelector(`[data-focus-key="${focused}"]`)?.focus();
  }

  /** The selected case's detail, rebuilt only when what it shows changed (typing and focus survive). */
  function detailFor(v) {
    const id = v.case_id;
    const ctx = contexts.get(id);
    const key = [id, v.version, busy.has(id), errors.get(id) || "", claimActive(v),
                 ctx === undefined ? "none" : ctx === "loading" ? "loading" : ctx instanceof Error ? "error" : "ok"].join("|");
    if (detail.key === key && detail.el) return detail.el;
    const el = caseDetail(v, {
      me, busy: busy.has(id), error: errors.get(id), context: ctx,
      picker: pickerFor(v),
      drafts: drafts.get(id) || {},
      onDraft: (field, text) => drafts.set(id, { ...(drafts.get(id) || {}), [field]: text }),
      onClaim: (release) => onClaim(id, release),
      onAct: (action) => onAct(id, action),
    });
    detail = { key, el };
    return el;
  }

  /** The labels a hide or remove would confirm (content cases only). */
  function pickerFor(v, prefix) {
    if (!TEACHES.has(v.target_type) || !actionsFor(v).includes("hide")) return null;
    return picks.picker(v.case_id, flaggedLabels(v), Boolean(blockedReason(v, me)), prefix);
  }

  function ensureContext(id) {
    if (contexts.has(id)) return;
    contexts.set(id, "loading");
    rest.get(`/api/mod/cases/${encodeURIComponent(id)}/context`)
      .then((c) => contexts.set(id, c))
      .catch((err) => {
        contexts.set(id, err);
        if (err.status === 401 || err.status === 403) onLoadError(err);
      })
      .finally(() => { if (id === selected) renderAll(); });
  }

  // -- selection

  function select(id, focus = true) {
    if (!id) return;
    paused = false;
    selected = id;
    selIndex = order.indexOf(id);
    renderAll();
    const btn = nodes.get(id)?.querySelector(".case-open");
    if (focus) btn?.focus();
    btn?.scrollIntoView({ block: "nearest" });
  }

  function move(delta) {
    if (!order.length) return;
    const i = order.indexOf(selected);
    // Nothing selected (the case left the list): the first move lands where it was.
    select(order[Math.max(0, Math.min(order.length - 1, i < 0 ? selIndex : i + delta))]);
  }

  function focusSelected() {
    const btn = selected && nodes.get(selected)?.querySelector(".case-open");
    (btn || $("queue-title")).focus();
  }

  function check(id, on) {
    if (on) checked.add(id); else checked.delete(id);
    renderAll();
  }

  return {
    renderAll, select, move, focusSelected, check,
    /** This moderator is deciding ``id``: when it leaves the list, the next case is selected. */
    leave: (id) => { if (id === selected) leaving = id; },
    selected: () => selected,
    /** The shown case_ids, in order. */
    order: () => order,
  };
}
