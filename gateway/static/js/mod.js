// /mod: the moderator console. Initial load from REST, then `mod:flagged` live; every case change
// carries the case `version`, so REST snapshots and events merge by version (the newer wins) and a
// reconnect resumes by offset without a gap. A compact queue list (sorted, filtered, searched) with
// the selected case's detail pane; keyboard shortcuts; bulk dismiss/hide (one versioned command per
// case); undo and reopen. Beside it: the Care tab (care.js) and the model's accuracy (accuracy.js).

import { accuracyPanel } from "./accuracy.js";
import { allPages, api } from "./api.js";
import { carePanel } from "./care.js";
import { authLostReason, noticeHandler } from "./common.js";
import { DONE, actionsFor, blockedReason, snippet, targetLabel } from "./console-case.js";
import { setupDialog, setupKeys } from "./console-keys.js";
import { queueView } from "./console-queue.js";
import { ABUSE_LABELS, claimActive, matches, pretty } from "./console-rank.js";
import { resolvedPanel, undoBar } from "./console-resolved.js";
import { announce, h, notice, tickTimes } from "./dom.js";
import { LabelPicks } from "./labels.js";
import { hold, pageClient, statusRenderer } from "./live.js";
import { setupSession } from "./session.js";
import { setupTabs } from "./tabs.js";

const STORAGE_KEY = "vybe.mod.token";
const CHANNEL = "mod:flagged";
const NOT_A_MODERATOR = "This console is for MODERATOR and ADMIN tokens; that one is not.";
const $ = (id) => document.getElementById(id);

const session = setupSession(STORAGE_KEY, start);

function start(token, claims) {
  if (claims.role && !["MODERATOR", "ADMIN"].includes(String(claims.role).toUpperCase())) {
    session.showSignIn(NOT_A_MODERATOR);  // the server would refuse it too (403): save the round trip
    return;
  }
  const me = claims.sub;
  const rest = api(() => client.token);
  const cases = new Map();       // case_id -> latest view (open and resolved)
  const drafts = new Map();      // case_id -> {note, message}
  const errors = new Map();      // case_id -> last error text
  const busy = new Set();        // case_id with a command in flight
  const checked = new Set();     // case_ids selected for a bulk action
  const contexts = new Map();    // case_id -> the /context answer, "loading" or an Error
  const picks = new LabelPicks(ABUSE_LABELS);   // what each hide/remove would confirm
  const form = $("tools");
  const state = { cases, drafts, errors, busy, checked, contexts, picks, filters: readFilters(), loadedOnce: false,
                  bulkRunning: false, incomplete: false, truncated: false };
  let removing = null;
  let loading = null;
  let tick = 0;                  // counts accepted case updates
  const touched = new Map();     // case_id -> tick of its latest accepted update

  const tabCount = (id, n) => { $(id).textContent = n; };
  const queue = queueView(state, { me, rest, onLoadError: (err) => loadFailed("the context")(err),
                                  onClaim: (id, release) => claim(id, release), onAct: (id, action) => act(id, action),
                                  onVanished: (v) => notice(vanished(v), { key: "vanished" }) });
  const { renderAll, select, focusSelected, check } = queue;
  const selected = () => queue.selected();
  const care = carePanel({ rest, me, onCount: (n) => tabCount("tab-count-care", n), onLoadError: loadFailed("care cases") });
  const accuracy = accuracyPanel({ rest, onLoadError: loadFailed("the model's accuracy") });
  setupTabs($("tabs"));
  const resolved = resolvedPanel({ rest, onLoadError: loadFailed("recent decisions"),
                                   onReopen: (v) => reopen([{ case_id: v.case_id, version: v.version }]) });
  const undo = undoBar({ onUndo: (entries) => reopen(entries) });
  const help = setupDialog($("keys-help"), $("keys-open"));
  const removeDialog = setupDialog($("remove-dialog"));

  // The socket is the SDK's (vybe-client.js): after a reconnect it resumes mod:flagged by offset.
  const client = pageClient(token);
  client.on("status", statusRenderer($("conn")));
  client.onChannel(CHANNEL, (msg) => {
    if (msg.event?.startsWith("care.") && msg.data?.care_id) {
      care.onEvent(msg);
      return;
    }
    const v = msg.data;
    if (!v?.case_id) return;
    const fresh = !cases.has(v.case_id);
    merge(v);
    if (msg.event === "report.flagged" && fresh) announce(`New flagged item: ${snippet(v.text, 60)}`);
    if (msg.event === "case.appealed") announce(`New appeal: ${snippet(v.text, 60)}`);
    if (msg.event === "report.resolved") {
      if (v.resolved_by !== me) announce(`${DONE[v.resolution] || "Resolved"} by ${v.resolved_by}: ${snippet(v.text, 60)}`);
      accuracy.refresh();   // every decision, by anyone, moves the figures
    }
  });
  client.on("subscribed", ({ channel, result }) => {
    // Not resumed (first subscribe, or the offset was too old): the REST snapshot
    // taken after this ack covers everything up to the live stream.
    if (channel === CHANNEL && result.recovered !== true) reloadAll();
  });
  client.on("subscribeError", ({ error }) => {
    if (error.code === "forbidden") {
      client.close();
      session.showSignIn(NOT_A_MODERATOR);
    } else {
      notice(`Could not subscribe to the queue: ${error.message}`, { kind: "error", key: "sub" });
    }
  });
  client.on("notice", noticeHandler(client, STORAGE_KEY, () => reloadAll()));
  client.on("authLost", ({ code }) => session.showSignIn(authLostReason(code)));

  function reloadAll() {
    reload();
    care.reload();
    resolved.load();
  }

  let again = false;        // a reload asked for while one was in flight: run once more after it
  let retryTimer = null;

  async function reload() {
    if (loading) {
      again = true;           // the one in flight may hold a snapshot older than what asked for this one
      return loading;
    }
    clearTimeout(retryTimer);
    loading = (async () => {
      try {
        const asked = tick;
        const { list, more } = await allPages(rest, "/api/mod/queue", "case_id");   // up to 10,000, oldest first
        const open = new Set(list.map((v) => v.case_id));
        for (const v of list) merge(v, false);
        // Open here but not in the snapshot: resolved meanwhile (its event may be lost) -- unless
        // an event updated it while the snapshot was in flight (then it is newer than the snapshot), or
        // the snapshot stopped short of it (a backlog past the pages loaded).
        const last = list.length ? list[list.length - 1].opened_at : null;
        for (const [id, v] of cases) {
          if (v.state === "open" && !open.has(id) && (touched.get(id) ?? 0) <= asked
              && !(more && last !== null && Date.parse(v.opened_at) >= Date.parse(last))) {
            cases.set(id, { ...v, state: "resolved" });
          }
        }
        state.incomplete = false;
        state.truncated = more;
        renderAll();
      } catch (err) {
        loadFailed("the queue")(err);
        if (err.retryAfter != null) {  // down for now: the queue shown may miss cases; load it again then
          state.incomplete = true;
          renderAll();
          retryTimer = setTimeout(reload, Math.max(1, err.retryAfter) * 1000);
        }
      } finally {
        loading = null;
      }
      if (again) {
        again = false;
        await reload();
      }
    })();
    return loading;
  }

  function loadFailed(what) {
    return (err) => {
      if (err.status === 401) session.showSignIn(authLostReason(4004));
      else if (err.status === 403) session.showSignIn(NOT_A_MODERATOR);
      else notice(`Could not load ${what}: ${err.message}${err.retryAfter != null
        ? ` Trying again in ${Math.ceil(Math.max(1, err.retryAfter))} s.` : ""}`, { kind: "error", key: `load ${what}` });
    };
  }

  function merge(view, render = true) {
    const old = cases.get(view.case_id);
    if (old && old.version > view.version) return;   // stale snapshot or late event
    cases.set(view.case_id, view);
    touched.set(view.case_id, ++tick);
    if (view.state !== "open") checked.delete(view.case_id);
    if (old && old.report_count !== view.report_count) contexts.delete(view.case_id);   // new reporters
    if (view.state === "resolved" || resolved.has(view.case_id)) resolved.merge(view);
    if (render) renderAll();
  }

  // -- rendering ------------------------------------------------------------------------

  function readFilters() {
    const val = (id) => $(id).value;
    return { q: val("f-q"), sort: val("f-sort"), label: val("f-label"), source: val("f-source"),
             state: val("f-state"), claim: val("f-claim"), appeals: val("f-appeals"),
             app: val("f-app") };
  }

  // -- commands -------------------------------------------------------------------------

  async function claim(id, release) {
    const v = cases.get(id);
    if (!v || busy.has(id)) return;
    const why = release ? null : blockedReason(v, me);
    if (why) {  // the key `c` too, not only the disabled button (the server refuses it as well)
      say(id, `Not claimed: ${why}`);
      return;
    }
    busy.add(id);
    errors.delete(id);
    renderAll();
    try {
      merge(await client.claim(id, v.version, { release }), false);
      announce(release ? "Released" : "Claimed by you");
    } catch (err) {
      fail(id, err);
    } finally {
      busy.delete(id);
      renderAll();
    }
  }

  async function act(id, action, confirmed = false) {
    const v = cases.get(id);
    if (!v || v.state !== "open" || busy.has(id)) return;
    if (!actionsFor(v).includes(action)) {
      say(id, action === "restore" ? "Restore is only for hidden or removed content." : `${DONE[action]} is not offered here.`);
      return;
    }
    const why = blockedReason(v, me);
    if (why) {
      say(id, `Not done: ${why}`);
      return;
    }
    if (action === "remove" && !confirmed) {
      removing = id;
      $("remove-what").textContent = `${targetLabel(v)} by ${v.author_id || "unknown"}: “${snippet(v.text, 100)}”`;
      removeDialog.show();
      return;
    }
    busy.add(id);
    errors.delete(id);
    renderAll();
    let claimedHere = false;
    try {
      let version = v.version;
      if (!(claimActive(v) && v.claimed_by === me)) {   // claim first, so others see who acts
        const held = await client.claim(id, version);
        merge(held);
        version = held.version;
        claimedHere = true;
      }
      const d = drafts.get(id) || {};
      const note = (d.note || "").trim();
      const message = (d.message || "").trim();
      queue.leave(id);
      const view = await client.resolve(id, version, action, { ...(note ? { note } : {}),
                                                               ...(message ? { message } : {}), ...picks.body(id, action) });
      drafts.delete(id);
      picks.forget(id);
      busy.delete(id);
      accuracy.refresh();
      merge(view);
      undo.show(`${DONE[action]}: “${snippet(v.text, 40)}”.`, [{ case_id: id, version: view.version }]);
      announce(`${DONE[action]}.${selected() ? "" : " The queue is empty."}`);
      focusSelected();
    } catch (err) {
      busy.delete(id);
      fail(id, err);
      showError(id);
      if (claimedHere && err.code !== "timeout") letGo(id);
    }
  }

  /** A claim taken only to act, by a decision that was refused: let it go, so the case does not stay held from
   *  other moderators until the claim expires. Not after a timeout (the decision may have landed: the reload shows
   *  it); a release that finds the case changed is refused by its version and changes nothing. */
  function letGo(id) {
    const v = cases.get(id);
    if (!v || v.state !== "open" || !(claimActive(v) && v.claimed_by === me)) return;
    client.claim(id, v.version, { release: true }).then((view) => merge(view), () => {});
  }

  /** What the moderator is told when the case they had open leaves the list by someone else's doing. */
  function vanished(v) {
    const what = v ? `“${snippet(v.text, 40)}”` : "The case you had open";
    const why = v?.state === "resolved" && v.resolved_by && v.resolved_by !== me
      ? `was ${(DONE[v.resolution] || "decided").toLowerCase()} by ${v.resolved_by}` : "left the list";
    return `${what} ${why}. Nothing is selected: press j or k to go on.`;
  }

  function say(id, text) {
    errors.set(id, text);
    showError(id);
    announce(text);
  }

  /** An error shows in the case's pane: a quick action from another row selects that case. */
  function showError(id) {
    if (selected() !== id && cases.get(id)?.state === "open") select(id, false);
    else renderAll();
  }

  /** Reopen resolved cases (undo, or Reopen under "Recently resolved"): back in the queue, selected. */
  async function reopen(entries) {
    $("bulk-status").hidden = true;   // what it said is being undone
    const failed = [];
    let last = null;
    for (const e of entries) {
      const version = Math.max(e.version, cases.get(e.case_id)?.version ?? 0);
      try {
        const view = await client.reopen(e.case_id, version);
        merge(view, false);
        last = view.case_id;
      } catch (err) {
        failed.push(`${snippet(cases.get(e.case_id)?.text, 40)}: ${err.message}`);
      }
    }
    accuracy.refresh();
    if (last && !matches(cases.get(last), state.filters, me)) clearFilters(false);
    renderAll();
    if (last) select(last);
    if (failed.length) notice(`Not reopened: ${failed.join("; ")}`, { kind: "error", key: "reopen" });
    else announce(entries.length === 1 ? "Reopened: back in the queue." : `Reopened ${entries.length} cases.`);
  }

  /** One resolve per selected case, each with its own version; failures are reported per case. */
  async function bulk(action) {
    const ids = queue.order().filter((id) => checked.has(id));
    if (!ids.length || state.bulkRunning) return;
    state.bulkRunning = true;  // live events re-render the counts meanwhile: the buttons stay off until done
    try {
      await bulkRun(ids, action);
    } finally {
      state.bulkRunning = false;
      renderAll();
    }
  }

  async function bulkRun(ids, action) {
    const status = $("bulk-status");
    const done = [];
    const failed = [];
    $("bulk-dismiss").disabled = $("bulk-hide").disabled = true;
    status.hidden = false;
    status.replaceChildren(`Working on ${ids.length}…`);
    for (const id of ids) {
      const v = cases.get(id);
      const why = !actionsFor(v).includes(action) ? `${DONE[action].toLowerCase()} is not offered for it`
        : blockedReason(v, me);
      if (why) { failed.push([v, why]); continue; }
      try {
        queue.leave(id);
        const view = await client.resolve(id, v.version, action, picks.body(id, action));  // labels picked per row
        picks.forget(id);
        done.push(view);
        merge(view, false);
      } catch (err) {
        failed.push([v, err.code === "conflict" ? `someone acted first (${err.message})` : err.message]);
      }
    }
    renderAll();
    accuracy.refresh();
    const head = `${DONE[action]} ${done.length} of ${ids.length}.`;
    status.replaceChildren(h("span", {}, head, failed.length ? " Not done:" : ""),
      failed.length ? h("ul", { class: "bulk-failures" }, failed.map(([v, why]) =>
        h("li", { dataset: { caseId: v.case_id } }, `“${snippet(v.text, 50)}”: ${why}`))) : null);
    if (done.length) {
      undo.show(`${head}`, done.map((v) => ({ case_id: v.case_id, version: v.version })));
    }
    if (failed.some(([, why]) => why.startsWith("someone acted first"))) reload();
    announce(head + (failed.length ? ` ${failed.length} not done.` : ""));
  }

  function fail(id, err) {
    const text = err.code === "conflict"
      ? `Someone acted first: ${err.message}. The queue was reloaded; check the case again.`
      : err.code === "timeout"
        // The command may have landed with its answer lost: never say "not done" for what may be done.
        ? "No answer came in time: it may have been done. The queue was reloaded; check the case before acting again."
        : `Not done (${err.code}): ${err.message}`;
    errors.set(id, text);
    if (err.code === "conflict" || err.code === "not_found" || err.code === "timeout") reload();
  }

  // -- controls ---------------------------------------------------------------------------

  function clearFilters(render = true) {
    const sort = $("f-sort").value;
    form.reset();
    $("f-sort").value = sort;
    state.filters = readFilters();
    if (render) renderAll();
  }

  for (const label of ABUSE_LABELS) $("f-label").append(h("option", { value: label }, pretty(label)));
  form.addEventListener("input", () => { state.filters = readFilters(); renderAll(); });
  form.addEventListener("submit", (ev) => ev.preventDefault());
  $("f-clear").addEventListener("click", () => clearFilters());
  $("filter-clear").addEventListener("click", () => clearFilters());
  $("check-all").addEventListener("change", (ev) => {
    for (const id of queue.order()) { if (ev.target.checked) checked.add(id); else checked.delete(id); }
    renderAll();
  });
  $("bulk-dismiss").addEventListener("click", () => bulk("dismiss"));
  $("bulk-hide").addEventListener("click", () => bulk("hide"));
  $("remove-confirm").addEventListener("click", () => {
    const id = removing;
    removing = null;
    $("remove-dialog").close();
    if (id) act(id, "remove", true);
  });

  const onSelected = (fn) => () => {
    if (selected()) fn(selected());
    else announce("Nothing is selected: press j or k to choose a case.");
  };
  setupKeys({
    j: () => queue.move(1),
    k: () => queue.move(-1),
    c: onSelected((id) => { const v = cases.get(id); claim(id, claimActive(v) && v.claimed_by === me); }),
    h: onSelected((id) => act(id, "hide")),
    r: onSelected((id) => act(id, "remove")),
    d: onSelected((id) => act(id, "dismiss")),
    s: onSelected((id) => act(id, "restore")),
    u: () => { if (!undo.undo()) announce("Nothing to undo."); },
    o: onSelected((id) => {
      const el = $(`case-${id}-context`);
      el?.scrollIntoView({ block: "nearest" });
      el?.focus();
    }),
    x: onSelected((id) => check(id, !checked.has(id))),
    n: onSelected((id) => $(`case-${id}-note`)?.focus()),
    "/": () => $("f-q").focus(),
    "?": () => help.show(),
  }, () => !$("panel-queue").hidden);

  // Claims expire on their own: refresh the claim lines now and then.
  setInterval(() => {
    if (cases.size) renderAll();
    care.refresh();
  }, 15000);
  tickTimes();

  accuracy.load();
  Promise.all([reload(), care.reload(), resolved.load()]).then(() => {
    state.loadedOnce = true;
    hold(client, CHANNEL);
    client.connect();
  });
}
