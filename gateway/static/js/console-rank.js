// The console's ordering and filtering: pure functions over case views (no DOM). Severity ranks
// what a moderator should see first: how far a score is over its threshold, how grave the label
// is, and how many distinct people reported it.

export const SYSTEM_REPORTER = "system:moderation";

/** The flag thresholds in force, label -> threshold: data the server puts in the page from the
 *  moderation policy (gateway/pages.py). No copy of them lives here; without it, no marks. */
function thresholdsInForce() {
  try {
    return JSON.parse(document.querySelector('meta[name="vybe-thresholds"]').content) || {};
  } catch {
    return {};
  }
}
export const THRESHOLDS = thresholdsInForce();
/** The abuse labels a moderator may confirm: the policy's, in its order (served with the thresholds). */
export const ABUSE_LABELS = Object.keys(THRESHOLDS);

/** How grave each label is when crossed (a threat outranks an insult at the same margin). */
const GRAVITY = { severe_toxicity: 1, threat: 1, identity_attack: 0.9, sexual_explicit: 0.85, insult: 0.75,
                  obscene: 0.6, toxicity: 0.6 };
/** The same for members' report types. */
const REPORT_GRAVITY = { SAFETY_CONCERN: 1, HARASSMENT: 0.8, INAPPROPRIATE_CONTENT: 0.75, COPYRIGHT: 0.5,
                         SPAM: 0.45, OTHER: 0.4 };

export const pretty = (label) => String(label).replace(/_/g, " ").toLowerCase();

/** "toxicity>=0.80 (0.93)" -> ["toxicity", 0.8, 0.93]: the threshold in force when the case was flagged,
 *  which may differ from today's. Cases store it only in this text (moderation/policy.py `reason`
 *  writes it; change the two together), so this is the one place that reads a reason back. */
export function parseReason(reason) {
  const m = /^([a-z_]+)>=([0-9.]+)(?: \(([0-9.]+)\))?/.exec(reason);
  return m ? [m[1], Number(m[2]), m[3] === undefined ? null : Number(m[3])] : null;
}

/** The reason of a case whose content the model could not score (common/labels.py UNSCORED). */
export const UNSCORED = "unscored";
const UNSCORED_SEVERITY = 0.6;
export const isUnscored = (v) => (v.reasons || []).includes(UNSCORED);

/** The abuse labels the model flagged on a case, read from its reasons. */
export function flaggedLabels(v) {
  const out = [];
  for (const r of v.reasons || []) {
    const label = parseReason(r)?.[0];
    if (ABUSE_LABELS.includes(label) && !out.includes(label)) out.push(label);
  }
  return out;
}

/** People (not the model) who reported the case. */
export function memberReporters(v) {
  return [...new Set((v.reporters || []).map((r) => r.reporter_id).filter((id) => id !== SYSTEM_REPORTER))];
}

/** "model", "members" or both: who raised the case. */
export function sources(v) {
  const out = new Set();
  if (v.scores || flaggedLabels(v).length || isUnscored(v)
      || (v.reporters || []).some((r) => r.reporter_id === SYSTEM_REPORTER)) {
    out.add("model");
  }
  if (memberReporters(v).length) out.add("members");
  return out;
}

/** 0..~1.3: the graver label by its margin over the threshold, or the members' reports, plus a little
 *  for each further distinct reporter. */
export function severity(v) {
  let model = 0;
  for (const r of v.reasons || []) {
    const parsed = parseReason(r);
    if (!parsed || !(parsed[0] in GRAVITY)) continue;
    const [label, limit, inReason] = parsed;
    const score = Number(v.scores?.[label] ?? inReason ?? limit);
    const margin = limit < 1 ? Math.max(0, Math.min(1, (score - limit) / (1 - limit))) : 0;
    model = Math.max(model, GRAVITY[label] * (0.55 + 0.45 * margin));
  }
  const people = memberReporters(v).length;
  let members = 0;
  for (const r of v.reporters || []) {
    if (r.reporter_id !== SYSTEM_REPORTER) members = Math.max(members, REPORT_GRAVITY[r.type] ?? 0.4);
  }
  members *= Math.min(1, 0.4 + 0.15 * people);
  // Content the model could not score is unknown, not harmless: medium until a person has looked.
  if (isUnscored(v) && !v.scores) model = Math.max(model, UNSCORED_SEVERITY);
  // The current model no longer flags it (`case.rescored`): its old scores no longer rank it; members' reports do.
  if (v.model_cleared_by) model = Math.min(model, 0.3);
  return Math.max(model, members) + 0.05 * Math.min(people, 6);
}

export function severityWord(s) {
  if (s >= 0.9) return "severe";
  if (s >= 0.7) return "high";
  if (s >= 0.5) return "medium";
  return "low";
}

export function claimActive(v) {
  return Boolean(v.claimed_by) && (!v.claim_expires_at || Date.parse(v.claim_expires_at) > Date.now());
}

/** An appeal waiting for a decision. */
export function isAppeal(v) {
  return Boolean(v.appeal_statement) && !v.appeal_outcome && v.state === "open";
}

/** When the case (or its appeal) came in, ms. */
export function arrived(v) {
  return Date.parse(v.appealed_at || v.opened_at);
}

const CONTENT_STATES = { visible: ["flagged", "pending", "approved"], hidden: ["hidden"], removed: ["removed"] };

/** The app a case comes from: a sister app's id for its items, else "vybe" (this app's own content). */
export function appOf(v) {
  return v.app || "vybe";
}

/** Does case `v` pass the filters (`f`: {label, source, state, claim, appeals, app, q}) for moderator `me`? */
export function matches(v, f, me) {
  if (f.app && appOf(v) !== f.app) return false;
  if (f.label && !flaggedLabels(v).includes(f.label)) return false;
  if (f.source && !sources(v).has(f.source)) return false;
  if (f.state && !(CONTENT_STATES[f.state] || []).includes(v.moderation_state)) return false;
  if (f.claim) {
    const held = claimActive(v);
    if (f.claim === "me" && !(held && v.claimed_by === me)) return false;
    if (f.claim === "others" && !(held && v.claimed_by !== me)) return false;
    if (f.claim === "nobody" && held) return false;
  }
  if (f.appeals === "only" && !isAppeal(v)) return false;
  if (f.appeals === "none" && isAppeal(v)) return false;
  const q = (f.q || "").trim().toLowerCase();
  const who = v.target_type === "user" ? v.target_id : v.author_id;   // a reported member is searched by their id
  if (q && !`${who || ""}\n${v.text || ""}`.toLowerCase().includes(q)) return false;
  return true;
}

/** Comparators by sort key; ties go to the older case (first come, first served). */
export const SORTS = {
  severity: (a, b) => severity(b) - severity(a) || arrived(a) - arrived(b),
  oldest: (a, b) => arrived(a) - arrived(b),
  newest: (a, b) => arrived(b) - arrived(a),
  reports: (a, b) => memberReporters(b).length - memberReporters(a).length
    || (b.report_count || 0) - (a.report_count || 0) || arrived(a) - arrived(b),
};
