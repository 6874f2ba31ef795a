// The console's "Model accuracy" panel: per label, how many of the model's flags moderators
// confirmed (precision) and how much of the harm moderators found the model had flagged (recall),
// from GET /api/mod/stats. Loaded on open; refreshed (debounced) after every resolution.

import { h } from "./dom.js";

const WINDOW_S = 30 * 86400;
const REFRESH_DELAY_MS = 300;   // a burst of resolutions costs one request

function pct(ratio) {
  return `${Math.round(ratio * 100)} %`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** "insult: 82 % of 45 flags confirmed · caught 90 % of 40" (as elements, for the list). */
function row(s) {
  const name = s.label === "any" ? "any label" : s.label.replace(/_/g, " ");
  const precision = s.flagged && s.precision !== null
    ? `${pct(s.precision)} of ${plural(s.flagged, "flag")} confirmed` : "no flags";
  const recall = s.harmful && s.recall !== null ? `caught ${pct(s.recall)} of ${s.harmful}` : "no harm found";
  return h("li", { class: `accuracy-row${s.flagged || s.harmful ? "" : " is-empty"}`, dataset: { label: s.label } },
    h("span", { class: "accuracy-label" }, name), ": ",
    h("span", { class: "accuracy-precision" }, precision), " · ",
    h("span", { class: "accuracy-recall" }, recall));
}

/** onLoadError(err): a load failed with 401/403 (the caller signs the page out). */
export function accuracyPanel({ rest, onLoadError }) {
  const listEl = document.getElementById("accuracy-list");
  const summaryEl = document.getElementById("accuracy-summary");
  let seq = 0;
  let timer = null;

  async function load() {
    const mine = ++seq;
    try {
      const stats = await rest.get(`/api/mod/stats?window=${WINDOW_S}`);
      if (mine !== seq) return;   // a newer load is on its way
      const days = Math.round(stats.window_s / 86400);
      document.getElementById("accuracy-window").textContent = `last ${plural(days, "day")}`;
      if (!stats.decisions) {
        summaryEl.textContent = "No decisions yet.";
        listEl.replaceChildren();
        return;
      }
      summaryEl.textContent = `From ${plural(stats.decisions, "decision")} by moderators.`;
      listEl.replaceChildren(...stats.labels.map(row));
    } catch (err) {
      if (mine !== seq) return;
      if (err.status === 401 || err.status === 403) onLoadError(err);
      else summaryEl.textContent = `Could not load the figures: ${err.message}`;
    }
  }

  return {
    load,
    refresh() {
      clearTimeout(timer);
      timer = setTimeout(load, REFRESH_DELAY_MS);
    },
  };
}
