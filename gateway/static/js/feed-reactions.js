// The reaction breakdown on a vybe: one toggle per reaction type that has any (Heart always),
// with its count, pressed when it is yours; the other types behind "More reactions".
// Counts come from reads (`reactions`) and live `reactions.changed` events (`by_type` deltas).

import { h, icon } from "./dom.js";

export const REACTIONS = [
  ["HEART", "Heart"], ["CLAP", "Clap"], ["FIRE", "Fire"], ["PEACE", "Peace"], ["INSPIRE", "Inspire"],
  ["STRENGTH", "Strength"], ["GRATITUDE", "Gratitude"], ["MINDFUL", "Mindful"],
];

/** `reactions` with a `by_type` delta applied (types that reach zero are left out, as reads do). */
export function applyDelta(reactions, byType) {
  const out = { ...(reactions || {}) };
  for (const [code, delta] of Object.entries(byType || {})) {
    const n = (out[code] || 0) + delta;
    if (n > 0) out[code] = n; else delete out[code];
  }
  return out;
}

/** Each type's count as shown: your own counts at least 1 even before its event has come back. */
export function shownCounts(v, mine) {
  const counts = {};
  for (const [code] of REACTIONS) {
    const n = Math.max(v.reactions?.[code] || 0, mine.has(code) ? 1 : 0);
    if (n) counts[code] = n;
  }
  return counts;
}

/** The total shown beside the breakdown: its sum, so the two always agree (reads fall back to the count). */
export function shownTotal(v, mine) {
  if (!v.reactions) return v.reaction_count || 0;
  return Object.values(shownCounts(v, mine)).reduce((a, b) => a + b, 0);
}

function chip(code, label, count, on, onToggle) {
  const who = on ? (count > 1 ? `you and ${count - 1} other${count > 2 ? "s" : ""}` : "you") : `${count}`;
  return h("button", {
    type: "button", class: `btn btn-react${on ? " is-on" : ""}`, "aria-pressed": on ? "true" : "false",
    title: count ? `${label}: ${who}` : label, dataset: { focusKey: `react-${code}`, reaction: code },
    onclick: () => onToggle(code),
  }, code === "HEART" ? icon("heart") : null, h("span", {}, label),
     count ? [" ", h("span", { class: "react-n" }, `${count}`)] : null);
}

/**
 * The breakdown for vybe `v`: `mine` is the set of types this viewer gave; `pickerOpen` keeps
 * "More reactions" open across a live re-render.
 */
export function reactionBar(v, mine, onToggle, pickerOpen) {
  const counts = shownCounts(v, mine);
  const count = (code) => counts[code] || 0;
  const shown = REACTIONS.filter(([code]) => code === "HEART" || count(code) > 0);
  const rest = REACTIONS.filter(([code]) => !shown.some(([c]) => c === code));
  const more = rest.length ? h("details", { class: "more-reactions" },
    h("summary", { class: "btn btn-quiet", dataset: { focusKey: "more" } }, "More reactions"),
    h("div", { class: "reaction-menu", role: "group", "aria-label": "More reactions" },
      rest.map(([code, label]) => h("button", {
        type: "button", class: "btn btn-chip", "aria-pressed": "false", dataset: { focusKey: `react-${code}` },
        onclick: (ev) => {
          ev.currentTarget.closest("details").open = false;
          onToggle(code);
        },
      }, label)))) : null;
  if (more && pickerOpen) more.open = true;
  return h("div", { class: "reactions", role: "group", "aria-label": "Reactions" },
    shown.map(([code, label]) => chip(code, label, count(code), mine.has(code), onToggle)), more);
}
