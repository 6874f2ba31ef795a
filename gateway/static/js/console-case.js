// One case in the console: its compact row in the queue list and, for the selected case, the
// detail pane (text, the decision, why it was flagged, who reported it, and the context around it).
// Builders only: every change goes through the callbacks the console passes in.

import { h, timeEl } from "./dom.js";
import {
  SYSTEM_REPORTER, THRESHOLDS, claimActive, flaggedLabels, isAppeal, isUnscored, memberReporters, parseReason,
  pretty, severity, severityWord,
} from "./console-rank.js";

export const DONE = { hide: "Hidden", remove: "Removed", restore: "Restored", dismiss: "Dismissed" };
const ACTED = { hide: "hid", remove: "removed", restore: "restored", dismiss: "dismissed" };
export const KEYS = { hide: "h", remove: "r", restore: "s", dismiss: "d" };
const STATE_WORDS = { flagged: "Visible to members", pending: "Visible to members", approved: "Visible to members",
                      hidden: "Hidden from members", removed: "Removed" };

export function targetLabel(v) {
  if (v.target_type === "comment") return "Comment";
  if (v.target_type === "user") return "Member";
  if (v.target_type === "app_item") {   // a sister app's text, or a publication on a namespace
    const kind = v.content_type || "item";
    return `${kind.charAt(0).toUpperCase()}${kind.slice(1)}`;
  }
  return "Vybe";
}

/** The badge naming a sister app's case (none for this app's own vybes and comments). */
function appBadge(v) {
  if (v.target_type !== "app_item") return null;
  return h("span", { class: "badge badge-app", title: v.channel ? `published on ${v.channel}` : `${v.app} ${v.content_type} ${v.content_id}` },
    v.app || "vybe");
}

export function snippet(text, n = 80) {
  if (!text) return "(no text)";
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

const fmt = (n) => Number(n).toFixed(2);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The decisions offered for a case, in button order: Restore only where the content is hidden or
 *  removed; members (user cases) can only be dismissed here. */
export function actionsFor(v) {
  if (v.target_type === "user" || !v.moderation_state) return ["dismiss"];
  if (v.moderation_state === "hidden" || v.moderation_state === "removed") return ["restore", "hide", "remove"];
  return ["dismiss", "hide", "remove"];
}

function actionLabel(v, action) {
  if (action === "hide" && v.moderation_state === "hidden") return "Keep hidden";
  if (action === "remove" && v.moderation_state === "removed") return "Keep removed";
  return { hide: "Hide", remove: "Remove", restore: "Restore", dismiss: "Dismiss" }[action];
}

const HINTS = {
  hide: "Out of feeds; can be restored, and the author may appeal",
  remove: "Taken down for good (asks to confirm)",
  restore: "Back in the feed",
  dismiss: "No violation: stays visible",
};

/** Why the moderator cannot decide this case now (null: they can). */
export function blockedReason(v, me) {
  if (isAppeal(v) && v.appeal_of && v.appeal_of === me) {
    return `You ${ACTED[v.resolution] || "decided"} this, so another moderator decides the appeal.`;
  }
  if (claimActive(v) && v.claimed_by !== me) return `${v.claimed_by} is working on this case.`;
  return null;
}

export function claimText(v, me) {
  if (!v.claimed_by) return "Unclaimed";
  const until = v.claim_expires_at ? new Date(v.claim_expires_at).toLocaleTimeString() : "";
  if (!claimActive(v)) return `Claim by ${v.claimed_by} expired`;
  if (v.claimed_by === me) return `Claimed by you${until ? ` until ${until}` : ""}`;
  return `Claimed by ${v.claimed_by}${until ? ` until ${until}` : ""}`;
}

/** The labels (or, for member reports, report types) that say what the case is about. */
function aboutWords(v) {
  const labels = flaggedLabels(v).map(pretty);
  if (labels.length) return labels.join(", ");
  const types = [...new Set((v.reporters || []).filter((r) => r.reporter_id !== SYSTEM_REPORTER).map((r) => pretty(r.type)))];
  if (types.length) return types.join(", ");
  return isUnscored(v) && !v.scores ? "could not be scored" : "flagged";
}

/** The compact row: select box, the button that opens the case, and one line of facts. */
/**
 * The compact row. Rows not selected also carry quick Dismiss/Hide (a glance is sometimes enough) and
 * the labels a hide would confirm (`picker`, from labels.js); the selected case has them in its pane.
 */
export function caseRow(v, { me, selected, checked, busy, picker, onOpen, onCheck, onAct }) {
  const id = v.case_id;
  const held = claimActive(v);
  const people = memberReporters(v).length;
  const sev = severityWord(severity(v));
  const check = h("input", { type: "checkbox", class: "case-check", checked,
                             "aria-label": `Select for bulk actions: ${targetLabel(v)} by ${v.author_id || "unknown"}`,
                             dataset: { focusKey: "check" } });
  check.addEventListener("change", () => onCheck(check.checked));
  const blocked = Boolean(blockedReason(v, me)) || busy;
  const quick = selected || isAppeal(v) ? [] : actionsFor(v).filter((a) => a === "dismiss" || a === "hide");
  return h("div", { class: "case-row" },
    check,
    h("button", { type: "button", class: "case-open", id: `case-${id}-row`, "aria-expanded": String(selected),
                  "aria-controls": selected ? `case-${id}-detail` : null, "aria-describedby": `case-${id}-facts`,
                  dataset: { focusKey: "open" }, onclick: onOpen },
      h("span", { class: "row-title" }, targetLabel(v), " by ", h("span", { class: "row-author" }, v.author_id || "unknown")),
      h("span", { class: "row-text" }, v.text === null ? "(deleted by its author)" : snippet(v.text))),
    quick.length ? h("div", { class: "row-quick" }, quick.map((action) => h("button", {
      type: "button", class: `btn btn-quick btn-${action}`, disabled: blocked, title: HINTS[action],
      "aria-label": `${actionLabel(v, action)}: ${targetLabel(v)} by ${v.author_id || "unknown"}`,
      dataset: { focusKey: `quick-${action}` }, onclick: () => onAct(action),
    }, actionLabel(v, action)))) : null,
    h("p", { class: "row-facts", id: `case-${id}-facts` },
      h("span", { class: `sev sev-${sev}`, title: "Severity: how far over the threshold, which label, how many reporters" },
        sev),
      isAppeal(v) ? h("span", { class: "badge badge-appeal" }, "appeal") : null,
      v.model_cleared_by ? h("span", { class: "badge badge-cleared", title: `The current model (${v.model_cleared_by})`
                                         + " no longer flags this" }, "model cleared") : null,
      appBadge(v),
      ["hidden", "removed"].includes(v.moderation_state)
        ? h("span", { class: `badge badge-state-${v.moderation_state}` }, v.moderation_state) : null,
      !selected && picker ? picker : h("span", { class: "row-about" }, aboutWords(v)),
      people ? h("span", { class: "row-reports" }, plural(people, "report")) : null,
      h("span", { class: "row-age" }, timeEl(v.appealed_at || v.opened_at)),
      held ? h("span", { class: `row-claim${v.claimed_by === me ? " is-mine" : ""}` },
               v.claimed_by === me ? "yours" : `held by ${v.claimed_by}`) : null));
}

/**
 * The detail pane of the selected case. ctx: {me, busy, error, context (the /context answer, "loading",
 * or an Error), picker (labels.js element or null), drafts: {note, message}, onDraft(field, text),
 * onClaim(release), onAct(action)}.
 */
export function caseDetail(v, ctx) {
  const id = v.case_id;
  const blocked = blockedReason(v, ctx.me);
  const mine = claimActive(v) && v.claimed_by === ctx.me;
  const othersHold = claimActive(v) && v.claimed_by !== ctx.me;
  const noteId = `case-${id}-note`;
  const msgId = `case-${id}-message`;
  const note = h("input", { type: "text", id: noteId, class: "note-input", maxlength: 500, autocomplete: "off",
                            "aria-describedby": `${noteId}-hint`, dataset: { focusKey: "note" } });
  note.value = ctx.drafts.note || "";
  note.addEventListener("input", () => ctx.onDraft("note", note.value));
  const message = h("textarea", { id: msgId, class: "message-input", rows: 2, maxlength: 500,
                                  "aria-describedby": `${msgId}-hint`, dataset: { focusKey: "message" } });
  message.value = ctx.drafts.message || "";
  message.addEventListener("input", () => ctx.onDraft("message", message.value));

  const claimBtn = mine
    ? h("button", { type: "button", class: "btn", disabled: ctx.busy, "aria-keyshortcuts": "c",
                    dataset: { focusKey: "claim" }, onclick: () => ctx.onClaim(true) }, "Release", kbd("c"))
    : h("button", { type: "button", class: "btn btn-claim", disabled: Boolean(blocked) || ctx.busy, "aria-keyshortcuts": "c",
                    dataset: { focusKey: "claim" }, onclick: () => ctx.onClaim(false) }, "Claim", kbd("c"));
  const decisions = actionsFor(v).map((action) => h("button", {
    type: "button", class: `btn btn-${action}`, disabled: Boolean(blocked) || ctx.busy, title: HINTS[action],
    "aria-keyshortcuts": KEYS[action], dataset: { focusKey: action, action }, onclick: () => ctx.onAct(action),
  }, actionLabel(v, action), kbd(KEYS[action])));

  return h("div", { class: "case-detail", id: `case-${id}-detail`, role: "region",
                    "aria-labelledby": `case-${id}-title` },
    h("header", { class: "case-head" },
      h("h3", { id: `case-${id}-title`, class: "case-title", tabindex: "-1" },
        targetLabel(v), " by ", h("span", { class: "author" }, v.author_id || "unknown"),
        v.is_anonymous ? h("span", { class: "badge badge-anon" }, "posted anonymously") : null, appBadge(v)),
      h("p", { class: "case-meta" },
        h("span", { class: `badge badge-state-${v.moderation_state || "none"}` },
          STATE_WORDS[v.moderation_state] || "Deleted"),
        h("span", { class: "muted" }, "flagged ", timeEl(v.opened_at)),
        v.target_type === "app_item"
          ? h("span", { class: "muted app-ref" }, v.channel ? ` · on ${v.channel}` : ` · ${v.app} id ${v.content_id}`)
          : null)),
    isAppeal(v) ? appealBlock(v, ctx.me) : null,
    parentBlock(ctx.context),
    h("blockquote", { class: "case-text" }, v.text ?? "(deleted by its author)"),
    v.model_cleared_by
      ? h("p", { class: "cleared-note" },
          `The current model (${v.model_cleared_by}) no longer flags this. If you agree, Dismiss.`)
      : null,
    h("section", { class: "decide", "aria-label": "Decision" },
      h("p", { class: `claim-line${othersHold ? " claim-other" : ""}`, role: "status" }, claimText(v, ctx.me)),
      blocked && !othersHold && !ctx.error ? h("p", { class: "blocked-why" }, blocked) : null,
      ctx.error ? h("p", { class: "case-error", role: "alert" }, ctx.error) : null,
      h("div", { class: "notes" },
        h("div", { class: "note-field" },
          h("label", { for: noteId }, "Internal note"),
          h("span", { class: "hint", id: `${noteId}-hint` }, "Moderators only: kept in the audit log."),
          note),
        h("div", { class: "note-field" },
          h("label", { for: msgId }, "Message to the author"),
          h("span", { class: "hint", id: `${msgId}-hint` }, "Optional: the author reads it with the outcome."),
          message)),
      ctx.picker,
      h("div", { class: "case-actions" },
        claimBtn,
        h("div", { class: "resolve-buttons", role: "group", "aria-label": "Decide" }, decisions))),
    whyBlock(v),
    reportsBlock(v, ctx.context),
    contextBlock(v, ctx.context));
}

function kbd(key) {
  return h("kbd", { class: "key", "aria-hidden": "true" }, key);
}

function appealBlock(v, me) {
  const who = v.appeal_of ? (v.appeal_of === me ? "you" : v.appeal_of) : "the model";
  return h("section", { class: "appeal-box", "aria-label": "Appeal" },
    h("p", { class: "appeal-head" }, h("strong", {}, "Appeal from the author"), " · ", timeEl(v.appealed_at)),
    h("blockquote", { class: "appeal-statement" }, v.appeal_statement),
    h("p", { class: "appeal-acted" }, `${DONE[v.resolution] || "Hidden"} by ${who}. `,
      "Restore grants the appeal; keeping it hidden or removing it denies it. The author is told the outcome."),
    v.note ? h("p", { class: "appeal-note" }, "Internal note then: ", h("q", {}, v.note)) : null,
    v.message ? h("p", { class: "appeal-message" }, "The author was told: ", h("q", {}, v.message)) : null);
}

/** The model's scores, once, with the threshold each was flagged at; the raw rules folded away. */
function whyBlock(v) {
  const raw = (v.reasons || []).length
    ? h("details", { class: "raw-reasons" },
        h("summary", {}, "Rules matched"),
        h("ul", { class: "chips" }, v.reasons.map((r) => h("li", { class: "chip" }, r))))
    : null;
  if (!v.scores) {
    const why = isUnscored(v)
      ? "The model could not score it: its attempts failed twice, ten minutes apart. Decide it by hand; "
        + "it is retried meanwhile, and its scores appear here if a retry succeeds."
      : "Not scored by the model: members reported it.";
    return h("section", { class: "scores scores-none", "aria-label": "Model scores" },
      h("h4", {}, "Model scores"), h("p", { class: isUnscored(v) ? "unscored" : "muted" }, why), raw);
  }
  const limits = { ...THRESHOLDS };
  for (const r of v.reasons || []) {
    const parsed = parseReason(r);
    if (parsed) limits[parsed[0]] = parsed[1];
  }
  // Abuse labels only (those with a flag threshold): self_harm_risk is a care signal, shown in the Care tab.
  const labels = Object.keys(THRESHOLDS).filter((l) => l in v.scores);
  return h("section", { class: "scores", "aria-label": "Model scores" },
    h("h4", {}, "Model scores ", h("span", { class: "muted small" }, "(line = flag threshold)")),
    h("ul", { class: "score-list" }, labels.map((label) => {
      const score = Number(v.scores[label]);
      const limit = limits[label];
      const over = limit !== undefined && score >= limit;
      const fill = h("span", { class: "bar-fill" });
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      const mark = limit === undefined ? null : h("span", { class: "bar-mark" });
      if (mark) mark.style.left = `${limit * 100}%`;
      return h("li", { class: `score${over ? " is-over" : ""}`, dataset: { label, score: fmt(score) } },
        h("span", { class: "score-label" }, pretty(label)),
        h("span", { class: "bar", "aria-hidden": "true" }, fill, mark),
        h("span", { class: "score-value" }, fmt(score),
          limit === undefined ? null : h("span", { class: "score-limit" }, over ? ` ≥ ${fmt(limit)}` : ` < ${fmt(limit)}`)));
    })),
    raw);
}

function accuracyText(rec) {
  if (!rec) return null;
  if (!rec.reports) return "no earlier reports decided";
  return `${rec.upheld} of ${plural(rec.reports, "earlier report")} upheld (${Math.round(rec.accuracy * 100)} %)`;
}

function reportsBlock(v, context) {
  const records = new Map((context && typeof context === "object" && !(context instanceof Error)
    ? context.reporters : []).map((r) => [r.reporter_id, r]));
  const people = v.reporters || [];
  return h("section", { class: "reports", "aria-label": "Reports" },
    h("h4", {}, `Reports: ${v.report_count}`),
    people.length
      ? h("ul", { class: "reporters" }, people.map((r) => {
          const model = r.reporter_id === SYSTEM_REPORTER;
          const acc = model ? null : accuracyText(records.get(r.reporter_id));
          return h("li", { dataset: { reporter: r.reporter_id } },
            h("span", { class: "reporter" }, model ? "model" : r.reporter_id),
            " · ", h("span", { class: "report-type" }, pretty(r.type)),
            // The model's own "description" repeats its scores, shown once above.
            r.description && !model ? h("span", { class: "report-desc" }, `: “${r.description}”`) : null,
            acc ? h("span", { class: "reporter-accuracy" }, ` — ${acc}`) : null);
        }))
      : h("p", { class: "muted" }, "No reports"));
}

function contextBlock(v, context) {
  const body = [];
  if (context === "loading" || context === undefined) {
    body.push(h("p", { class: "muted" }, "Loading the context…"));
  } else if (context instanceof Error) {
    body.push(h("p", { class: "case-error" }, `Could not load the context: ${context.message}`));
  } else {
    body.push(historyBlock(v, context.author_history || []));
  }
  return h("section", { class: "case-context", id: `case-${v.case_id}-context`, tabindex: "-1",
                        "aria-labelledby": `case-${v.case_id}-context-title` },
    h("h4", { id: `case-${v.case_id}-context-title` }, "Context ", h("span", { class: "muted small" }, "(o)")),
    body);
}

/** A comment's parent vybe, shown above the comment: what it answers is half its meaning. */
function parentBlock(context) {
  const p = context && typeof context === "object" && !(context instanceof Error) ? context.parent : null;
  if (!p) return null;
  return h("div", { class: "ctx-parent" },
    h("h4", {}, "In reply to a vybe by ", h("span", { class: "ctx-parent-author" }, p.author_id),
      p.is_anonymous ? h("span", { class: "badge badge-anon", title: "Members do not know who wrote it: do not name "
                                  + "its author in a message" }, "posted anonymously") : null),
    h("blockquote", { class: "ctx-parent-text" }, p.text),
    ["hidden", "removed"].includes(p.moderation_state)
      ? h("p", { class: "muted" }, `That vybe is ${p.moderation_state}.`) : null);
}

function historyBlock(v, past) {
  const who = v.author_id || "the author";
  if (!past.length) return h("p", { class: "ctx-history-none" }, `No earlier cases about ${who}.`);
  const tally = {};
  for (const c of past) {
    const word = c.state === "open" ? "open" : (DONE[c.resolution] || "resolved").toLowerCase();
    tally[word] = (tally[word] || 0) + 1;
  }
  const summary = Object.entries(tally).map(([w, n]) => `${n} ${w}`).join(", ");
  return h("div", { class: "ctx-history" },
    h("h4", {}, `${who}’s earlier cases: ${past.length}`, h("span", { class: "muted small" }, ` (${summary})`)),
    h("ul", { class: "history-list" }, past.map((c) =>
      h("li", { class: "history-item", dataset: { caseId: c.case_id } },
        h("span", { class: `badge badge-${c.resolution || "open"}` },
          c.state === "open" ? "open" : DONE[c.resolution] || "resolved"),
        " ", h("span", { class: "history-text" }, snippet(c.excerpt, 70)),
        " ", h("span", { class: "muted" }, timeEl(c.resolved_at || c.opened_at))))));
}
