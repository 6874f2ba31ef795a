// What the feed tells a member about their own content: a moderation outcome (which vybe or
// comment, the moderator's message, an appeal once, the appeal's result) and a care notice
// (calm, with the deployment's resources as links).

import { h, notice } from "./dom.js";
import { outLink, safeUrl } from "./feed-text.js";

const GONE = { hide: "hidden", remove: "removed" };

function quoted(excerpt) {
  return excerpt ? [" ", h("q", { class: "excerpt" }, excerpt)] : "";
}

/** The sentence for an outcome: who did what to which piece of your content. */
function outcomeText(d) {
  const what = d.target_type === "comment" ? "comment" : "vybe";
  const q = quoted(d.excerpt);
  if (d.appeal === "granted") return ["Your appeal was granted: your ", what, q, " is visible again."];
  if (d.appeal === "denied") {
    return ["Your appeal was reviewed and not granted: your ", what, q, ` stays ${GONE[d.action] || "hidden"}.`];
  }
  const who = d.by === "model" ? "Our automatic filter" : "A moderator";
  switch (d.action) {
    case "hide": return [`${who} hid your `, what, q, ". Others can no longer see it."];
    case "remove": return [`${who} removed your `, what, q, "."];
    case "restore": return ["A moderator restored your ", what, q, ": it is visible again."];
    case "dismiss": return ["A moderator reviewed your ", what, q, " and left it up."];
    default: return [`A moderator acted on your ${what}`, q, "."];
  }
}

function appealForm(d, sendAppeal, slot) {
  const id = `appeal-${d.target_id}`;
  const text = h("textarea", { id, rows: 3, maxlength: 1000, required: true });
  const status = h("span", { class: "form-status", role: "status" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Send appeal");
  const form = h("form", { class: "appeal-form stack" },
    h("label", { for: id }, "Why should it be visible again? (once, up to 1,000 characters)"), text,
    h("div", { class: "appeal-actions" }, submit,
      h("button", { type: "button", class: "btn", onclick: () => {
        const again = appealButton(d, sendAppeal, slot);
        slot.replaceChildren(again);
        again.focus();
      } }, "Cancel")),
    status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const statement = text.value.trim();
    if (!statement) return;
    submit.disabled = true;
    status.textContent = "Sending…";
    try {
      await sendAppeal(d, statement);
      slot.replaceChildren(h("p", { class: "appeal-sent" },
        "Appeal sent. A moderator who did not make this decision will review it; the answer will appear here."));
    } catch (err) {
      submit.disabled = false;
      status.textContent = err.code === "conflict" ? "You have already appealed this decision."
        : `Not sent: ${err.message}`;
    }
  });
  return form;
}

function appealButton(d, sendAppeal, slot) {
  return h("button", { type: "button", class: "btn", onclick: () => {
    slot.replaceChildren(appealForm(d, sendAppeal, slot));
    slot.querySelector("textarea").focus();
  } }, "Appeal");
}

/** Show a `moderation.outcome`; `sendAppeal(data, statement)` appeals it (when it is appealable). */
export function showOutcome(d, sendAppeal) {
  const slot = h("div", { class: "notice-wide appeal-slot" });
  if (d.appealable) slot.append(appealButton(d, sendAppeal, slot));
  const text = [outcomeText(d)];
  if (d.message) text.push(h("span", { class: "mod-message" }, "Message from the moderator: ", h("q", {}, d.message)));
  const el = notice(text, { kind: d.action in GONE && d.appeal !== "granted" ? "warn" : "info",
                            key: `outcome-${encodeURIComponent(d.target_id)}`, actions: d.appealable ? [slot] : [] });
  el.dataset.targetId = d.target_id;
  el.classList.add("notice-outcome");
  return el;
}

/** Show a `care.notice`: its message and resources, calmly (never the error colours). */
export function showCare(d) {
  const links = (d.resources || []).map((r) => {
    const href = safeUrl(r.url, ["https:", "http:", "tel:"]);
    return href ? h("li", {}, outLink(href, r.title || r.url, { ugc: false })) : null;
  }).filter(Boolean);
  const el = notice(d.message, {
    kind: "care", key: `care-${encodeURIComponent(d.target_id)}`,
    actions: links.length ? [h("div", { class: "notice-wide" },
      h("p", { class: "care-links-title" }, "People you can talk to:"), h("ul", { class: "care-links" }, links))] : [],
  });
  el.classList.add("notice-care-box");
  return el;
}
