// /mod: the live moderation queue. Initial load from REST, then `mod:flagged` live;
// every case change carries the case `version`, so REST snapshots and events merge
// by version (the newer wins) and a reconnect resumes by offset without a gap.

import { api } from "./api.js";
import { authLostReason, noticeHandler } from "./common.js";
import { announce, h, notice, tickTimes, timeEl } from "./dom.js";
import { LiveSocket, statusRenderer } from "./live.js";
import { setupSession } from "./session.js";

const STORAGE_KEY = "vybe.mod.token";
const CHANNEL = "mod:flagged";
const RESOLVED_KEEP = 20;

const ACTIONS = [
  { action: "hide", label: "Hide", hint: "out of feeds, kept for appeal" },
  { action: "remove", label: "Remove", hint: "taken down for good" },
  { action: "restore", label: "Restore", hint: "back to the feed" },
  { action: "dismiss", label: "Dismiss", hint: "no violation" },
];
const DONE = { hide: "Hidden", remove: "Removed", restore: "Restored", dismiss: "Dismissed" };

/** The flag thresholds in force, label -> threshold: data the server puts in the page from the
 *  moderation policy (gateway/pages.py). No copy of them lives here; without it, no marks. */
function thresholdsInForce() {
  try {
    return JSON.parse(document.querySelector('meta[name="vybe-thresholds"]').content) || {};
  } catch {
    return {};
  }
}
const THRESHOLDS = thresholdsInForce();

/** "toxicity>=0.80 (0.93)" -> ["toxicity", 0.8]: the threshold in force when the case was flagged,
 *  which may differ from today's. Cases store it only in this text (moderation/policy.py `reason`
 *  writes it; change the two together), so this is the one place that reads a reason back. */
function parseReason(reason) {
  const m = /^([a-z_]+)>=([0-9.]+)/.exec(reason);
  return m ? [m[1], Number(m[2])] : null;
}

function fmt(n) {
  return Number(n).toFixed(2);
}

const session = setupSession(STORAGE_KEY, start);

const NOT_A_MODERATOR = "This console is for MODERATOR and ADMIN tokens; that one is not.";

function start(token, claims) {
  if (claims.role && !["MODERATOR", "ADMIN"].includes(String(claims.role).toUpperCase())) {
    session.showSignIn(NOT_A_MODERATOR);  // the server would refuse it too (403): save the round trip
    return;
  }
  const me = claims.sub;
  const rest = api(() => socket.token);
  const cases = new Map();       // case_id -> latest view (open and resolved)
  const nodes = new Map();       // case_id -> <li>
  const drafts = new Map();      // case_id -> note text
  const errors = new Map();      // case_id -> last error text
  const busy = new Set();        // case_id with a command in flight
  const resolvedHere = [];       // case_ids resolved while this page was open, newest first
  const queueEl = document.getElementById("queue");
  const resolvedEl = document.getElementById("resolved");
  let loading = null;
  let loadedOnce = false;

  const socket = new LiveSocket(token, {
    onStatus: statusRenderer(document.getElementById("conn")),
    onEvent(msg) {
      if (msg.channel !== CHANNEL || !msg.data?.case_id) return;
      const fresh = !cases.has(msg.data.case_id);
      merge(msg.data);
      if (msg.event === "report.flagged" && fresh) announce(`New flagged item: ${snippet(msg.data.text)}`);
      if (msg.event === "report.resolved") {
        const v = msg.data;
        announce(`${DONE[v.resolution] || "Resolved"} by ${v.resolved_by}: ${snippet(v.text)}`);
      }
    },
    onSubscribed(channel, result) {
      // Not resumed (first subscribe, or the offset was too old): the REST snapshot
      // taken after this ack covers everything up to the live stream.
      if (channel === CHANNEL && result.recovered !== true) reload();
    },
    onSubscribeError(channel, err) {
      if (err.code === "forbidden") {
        socket.stop();
        session.showSignIn(NOT_A_MODERATOR);
      } else {
        notice(`Could not subscribe to the queue: ${err.message}`, { kind: "error", key: "sub" });
      }
    },
    onNotice: noticeHandler(() => socket, STORAGE_KEY, () => reload()),
    onAuthLost(code) { session.showSignIn(authLostReason(code)); },
  });

  async function reload() {
    if (loading) return loading;
    loading = (async () => {
      try {
        const list = await rest.get("/api/mod/queue?limit=500");
        const open = new Set(list.map((v) => v.case_id));
        for (const v of list) merge(v, false);
        // Open here but not in the snapshot: resolved meanwhile (its event may be lost).
        for (const [id, v] of cases) {
          if (v.state === "open" && !open.has(id)) { v.state = "resolved"; v.stale = true; }
        }
        renderAll();
      } catch (err) {
        if (err.status === 401) session.showSignIn(authLostReason(4004));
        else if (err.status === 403) session.showSignIn(NOT_A_MODERATOR);
        else notice(`Could not load the queue: ${err.message}`, { kind: "error", key: "load" });
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function merge(view, render = true) {
    const old = cases.get(view.case_id);
    if (old && old.version > view.version) return;   // stale snapshot or late event
    const wasOpen = old?.state === "open";
    cases.set(view.case_id, view);
    if (view.state !== "open" && (wasOpen || !old) && view.resolved_by) {
      if (!resolvedHere.includes(view.case_id)) resolvedHere.unshift(view.case_id);
      resolvedHere.splice(RESOLVED_KEEP);
    }
    if (render) renderAll();
  }

  function claimActive(v) {
    return Boolean(v.claimed_by) && (!v.claim_expires_at || Date.parse(v.claim_expires_at) > Date.now());
  }

  function renderAll() {
    const open = [...cases.values()].filter((v) => v.state === "open")
      .sort((a, b) => Date.parse(a.opened_at) - Date.parse(b.opened_at));
    const keep = new Set(open.map((v) => v.case_id));
    for (const [id, li] of nodes) {
      if (!keep.has(id)) { li.remove(); nodes.delete(id); }
    }
    open.forEach((v, i) => {
      let li = nodes.get(v.case_id);
      const fresh = !li;
      if (fresh) {
        li = h("li", { class: "case-item" });
        nodes.set(v.case_id, li);
      }
      renderCase(li, v, fresh);
      if (queueEl.children[i] !== li) queueEl.insertBefore(li, queueEl.children[i] || null);
    });
    document.getElementById("queue-empty").hidden = open.length > 0;
    const mine = open.filter((v) => claimActive(v) && v.claimed_by === me).length;
    const others = open.filter((v) => claimActive(v) && v.claimed_by !== me).length;
    document.getElementById("count-open").textContent = open.length;
    document.getElementById("count-unclaimed").textContent = open.length - mine - others;
    document.getElementById("count-mine").textContent = mine;
    document.getElementById("count-others").textContent = others;
    document.getElementById("count-resolved").textContent =
      resolvedHere.filter((id) => cases.get(id)?.state !== "open").length;
    document.title = open.length ? `(${open.length}) Vybe Live · Moderation` : "Vybe Live · Moderation";
    renderResolved();
  }

  function renderResolved() {
    const done = resolvedHere.map((id) => cases.get(id)).filter((v) => v && v.state !== "open");  // reopened: back in the queue
    resolvedEl.replaceChildren(...done.map((v) =>
      h("li", { class: "resolved-item", dataset: { caseId: v.case_id } },
        h("span", { class: `badge badge-${v.resolution || "done"}` }, DONE[v.resolution] || "Resolved"),
        " ",
        h("span", { class: "resolved-text" }, snippet(v.text, 90)),
        h("span", { class: "muted" }, ` by ${v.resolved_by}${v.note ? ` · “${v.note}”` : ""}`))));
    document.getElementById("resolved-empty").hidden = done.length > 0;
  }

  function renderCase(li, v, fresh) {
    // Keep focus on the same control across a re-render.
    const active = li.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    const claimed = claimActive(v);
    const mineClaim = claimed && v.claimed_by === me;
    const blocked = claimed && !mineClaim;
    const isBusy = busy.has(v.case_id);
    const titleId = `case-${v.case_id}-title`;
    const noteId = `case-${v.case_id}-note`;

    const note = h("input", { type: "text", id: noteId, class: "note-input", maxlength: 500,
                              autocomplete: "off", disabled: blocked, dataset: { focusKey: "note" },
                              placeholder: "Why (kept in the audit log)" });
    note.value = drafts.get(v.case_id) || "";
    note.addEventListener("input", () => drafts.set(v.case_id, note.value));

    const claimBtn = mineClaim
      ? h("button", { type: "button", class: "btn", disabled: isBusy, dataset: { focusKey: "claim" },
                      onclick: () => claim(v.case_id, true) }, "Release")
      : h("button", { type: "button", class: "btn btn-primary", disabled: blocked || isBusy,
                      dataset: { focusKey: "claim" }, onclick: () => claim(v.case_id, false) }, "Claim");

    const article = h("article", { class: `case${claimed ? " is-claimed" : ""}${mineClaim ? " is-mine" : ""}`,
                                   "aria-labelledby": titleId, tabindex: "-1",
                                   dataset: { caseId: v.case_id, targetId: v.target_id, state: v.state,
                                              claimedBy: claimed ? v.claimed_by : "" } },
      h("header", { class: "case-head" },
        h("h3", { id: titleId, class: "case-title" },
          targetLabel(v), " by ",
          h("span", { class: "author" }, v.author_id || "unknown"),
          v.is_anonymous ? h("span", { class: "badge badge-anon" }, "posted anonymously") : null),
        h("div", { class: "case-meta" },
          h("span", { class: `badge badge-state-${v.moderation_state || "none"}` },
            `content ${v.moderation_state || "n/a"}`),
          h("span", { class: "muted" }, "opened ", timeEl(v.opened_at)),
          h("span", { class: "muted" }, `v${v.version}`))),
      h("blockquote", { class: "case-text" }, v.text ?? "(no text: the item was deleted)"),
      h("div", { class: "case-body" },
        scoresBlock(v),
        h("div", { class: "case-side" },
          reasonsBlock(v),
          reportsBlock(v))),
      h("p", { class: `claim-line${blocked ? " claim-other" : ""}`, role: "status" },
        claimText(v, claimed, mineClaim)),
      errors.get(v.case_id) ? h("p", { class: "case-error", role: "alert" }, errors.get(v.case_id)) : null,
      h("div", { class: "case-actions" },
        claimBtn,
        h("div", { class: "resolve" },
          h("label", { for: noteId, class: "note-label" }, "Note"),
          note,
          h("div", { class: "resolve-buttons", role: "group", "aria-label": "Resolve" },
            ACTIONS.map((a) => h("button", {
              type: "button", class: `btn btn-${a.action}`, disabled: blocked || isBusy,
              title: a.hint, dataset: { focusKey: a.action, action: a.action },
              onclick: () => resolve(v.case_id, a.action),
            }, a.label))))));
    li.replaceChildren(article);
    if (fresh && cases.size > 0 && loadedOnce) li.classList.add("is-new");
    if (active) li.querySelector(`[data-focus-key="${active}"]`)?.focus();
  }

  function claimText(v, claimed, mine) {
    if (!v.claimed_by) return "Unclaimed";
    const until = v.claim_expires_at ? new Date(v.claim_expires_at).toLocaleTimeString() : "";
    if (!claimed) return `Claim by ${v.claimed_by} expired`;
    if (mine) return `Claimed by you${until ? ` until ${until}` : ""}`;
    return `Claimed by ${v.claimed_by}${until ? ` until ${until}` : ""}`;
  }

  async function claim(caseId, release) {
    const v = cases.get(caseId);
    busy.add(caseId);
    errors.delete(caseId);
    renderAll();
    try {
      const view = await socket.command("claim", { case_id: caseId, version: v.version, release });
      merge(view, false);
      announce(release ? "Released" : "Claimed");
    } catch (err) {
      fail(caseId, err);
    } finally {
      busy.delete(caseId);
      renderAll();
    }
  }

  async function resolve(caseId, action) {
    const v = cases.get(caseId);
    const note = (drafts.get(caseId) || "").trim();
    const next = nextCaseAfter(caseId);
    busy.add(caseId);
    errors.delete(caseId);
    renderAll();
    try {
      const view = await socket.command("resolve", { case_id: caseId, version: v.version, action,
                                                     ...(note ? { note } : {}) });
      drafts.delete(caseId);
      merge(view, false);
      announce(`${DONE[action]}.`);
      busy.delete(caseId);
      renderAll();
      const target = next && nodes.get(next)?.querySelector("article");
      (target || document.getElementById("queue-title")).focus?.();
    } catch (err) {
      busy.delete(caseId);
      fail(caseId, err);
      renderAll();
    }
  }

  function nextCaseAfter(caseId) {
    const ids = [...nodes.keys()];
    const i = ids.indexOf(caseId);
    return ids[i + 1] || ids[i - 1] || null;
  }

  function fail(caseId, err) {
    const text = err.code === "conflict"
      ? `Someone acted first: ${err.message}. The queue was reloaded; check the item again.`
      : `Not done (${err.code}): ${err.message}`;
    errors.set(caseId, text);
    if (err.code === "conflict" || err.code === "not_found") reload();
  }

  // Claims expire on their own: refresh the claim lines now and then.
  setInterval(() => { if (cases.size) renderAll(); }, 15000);
  tickTimes();

  reload().then(() => {
    loadedOnce = true;
    socket.subscribe(CHANNEL);
    socket.start();
  });
}

function targetLabel(v) {
  if (v.target_type === "comment") return "Comment";
  if (v.target_type === "user") return "User";
  return "Vybe";
}

function snippet(text, n = 60) {
  if (!text) return "(no text)";
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

function scoresBlock(v) {
  if (!v.scores) {
    return h("div", { class: "scores scores-none" },
      h("h4", {}, "Model scores"),
      h("p", { class: "muted" }, "Not scored by the model (flagged by user reports)."));
  }
  const limits = { ...THRESHOLDS };
  for (const r of v.reasons || []) {
    const parsed = parseReason(r);
    if (parsed) limits[parsed[0]] = parsed[1];
  }
  const labels = [...new Set([...Object.keys(THRESHOLDS), ...Object.keys(v.scores)])]
    .filter((l) => l in v.scores);
  return h("div", { class: "scores" },
    h("h4", {}, "Model scores ", h("span", { class: "muted small" }, "(mark = flag threshold)")),
    h("ul", { class: "score-list" }, labels.map((label) => {
      const score = Number(v.scores[label]);
      const limit = limits[label];
      const over = limit !== undefined && score >= limit;
      const fill = h("span", { class: "bar-fill" });
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      const mark = limit === undefined ? null : h("span", { class: "bar-mark" });
      if (mark) mark.style.left = `${limit * 100}%`;
      return h("li", { class: `score${over ? " is-over" : ""}`, dataset: { label, score: fmt(score) } },
        h("span", { class: "score-label" }, label.replace(/_/g, " ")),
        h("span", { class: "bar", "aria-hidden": "true" }, fill, mark),
        h("span", { class: "score-value" },
          fmt(score),
          limit === undefined ? null
            : h("span", { class: "score-limit" }, over ? ` ≥ ${fmt(limit)}` : ` < ${fmt(limit)}`),
          over ? h("span", { class: "over-tag" }, " over") : null));
    })));
}

function reasonsBlock(v) {
  return h("div", { class: "reasons" },
    h("h4", {}, "Reasons"),
    (v.reasons || []).length
      ? h("ul", { class: "chips" }, v.reasons.map((r) => h("li", { class: "chip" }, r)))
      : h("p", { class: "muted" }, "None recorded"));
}

function reportsBlock(v) {
  const people = (v.reporters || []);
  return h("div", { class: "reports" },
    h("h4", {}, `Reports: ${v.report_count}`),
    people.length
      ? h("ul", { class: "reporters" }, people.map((r) =>
          h("li", {},
            h("span", { class: "reporter" }, r.reporter_id === "system:moderation" ? "model" : r.reporter_id),
            " · ", h("span", { class: "report-type" }, r.type.replace(/_/g, " ").toLowerCase()),
            r.description ? h("span", { class: "report-desc" }, `: ${r.description}`) : null)))
      : h("p", { class: "muted" }, "No reports"));
}
