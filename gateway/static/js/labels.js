// The labels a moderator confirms when hiding or removing (the decision trains the model): a
// compact <details> per case whose checkboxes start at the labels the model flagged. Untouched,
// nothing is sent and the server counts the model's flags (or, with none, the reports' types).

import { h } from "./dom.js";

const HARMFUL = new Set(["hide", "remove"]);

const pretty = (label) => label.replace(/_/g, " ");

export class LabelPicks {
  /** labels: the abuse labels in the policy's order (served to the page with the thresholds). */
  constructor(labels) {
    this.labels = labels;
    this.chosen = new Map();   // case_id -> Set the moderator changed (absent: the model's flags)
    this.open = new Set();     // case_id whose picker is open (kept across re-renders)
  }

  /** The picker for one case (null when the page knows no labels); `flagged`: the model's labels. */
  picker(caseId, flagged, disabled, prefix = "Labels if hidden or removed: ") {
    if (!this.labels.length) return null;
    const chosen = this.chosen.get(caseId) ?? new Set(flagged);
    const said = h("span", { class: "labels-chosen" }, this.text(caseId, chosen));
    const boxes = this.labels.map((label) => {
      const boxId = `case-${caseId}-label-${label}`;
      const box = h("input", { type: "checkbox", id: boxId, checked: chosen.has(label), disabled,
                               dataset: { focusKey: `label-${label}`, label } });
      box.addEventListener("change", () => {
        const set = new Set(this.chosen.get(caseId) ?? flagged);
        if (box.checked) set.add(label); else set.delete(label);
        this.chosen.set(caseId, set);
        said.textContent = this.text(caseId, set);
      });
      return h("span", { class: "label-check" }, box, h("label", { for: boxId }, pretty(label)));
    });
    const details = h("details", { class: "labels-pick", open: this.open.has(caseId) },
      h("summary", { dataset: { focusKey: "labels" } }, prefix, said),
      h("fieldset", { class: "labels-boxes" },
        h("legend", { class: "visually-hidden" }, "Labels that apply"), boxes));
    details.addEventListener("toggle", () => (details.open ? this.open.add(caseId) : this.open.delete(caseId)));
    return details;
  }

  text(caseId, chosen) {
    if (chosen.size) return this.labels.filter((l) => chosen.has(l)).map(pretty).join(", ");
    return this.chosen.has(caseId) ? "harmful, no label named" : "as the reports say";
  }

  /** The resolve command's extra fields: `labels` only for a hide/remove the moderator changed. */
  body(caseId, action) {
    if (!HARMFUL.has(action) || !this.chosen.has(caseId)) return {};
    const chosen = this.labels.filter((l) => this.chosen.get(caseId).has(l));
    // "toxicity" means harmful in any way; an empty list would read as "the model's flags" instead.
    return { labels: chosen.length ? chosen : ["toxicity"] };
  }

  forget(caseId) {
    this.chosen.delete(caseId);
    this.open.delete(caseId);
  }
}
