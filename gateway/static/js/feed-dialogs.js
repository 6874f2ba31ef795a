// Modal dialogs for the feed's member tools: a confirmation (delete) and the report form.
// A native <dialog> opened with showModal(): focus stays inside, Escape cancels, and it lives
// outside the feed list, so live re-renders of the feed never disturb it.

import { h } from "./dom.js";

export const REPORT_TYPES = [
  ["SPAM", "Spam or a scam"],
  ["HARASSMENT", "Harassment or bullying"],
  ["INAPPROPRIATE_CONTENT", "Inappropriate content"],
  ["SAFETY_CONCERN", "Someone may be in danger"],
  ["COPYRIGHT", "Copyright"],
  ["OTHER", "Something else"],
];

let serial = 0;

function shell(title, returnFocus) {
  serial += 1;
  const titleId = `dialog-title-${serial}`;
  const dialog = h("dialog", { class: "dialog", "aria-labelledby": titleId },
    h("h2", { id: titleId, class: "dialog-title" }, title));
  dialog.addEventListener("close", () => {
    dialog.remove();
    returnFocus?.();
  });
  document.body.append(dialog);
  return dialog;
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export function confirmDialog({ title, text, confirm, cancel = "Cancel", returnFocus }) {
  return new Promise((resolve) => {
    const dialog = shell(title, returnFocus);
    const keep = h("button", { type: "submit", class: "btn", value: "cancel", autofocus: true }, cancel);
    dialog.append(
      h("p", {}, text),
      h("form", { method: "dialog", class: "dialog-actions" },
        keep, h("button", { type: "submit", class: "btn btn-danger", value: "confirm" }, confirm)));
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"));
    dialog.showModal();
    keep.focus();
  });
}

/**
 * The report form: a reason (required) and an optional description for moderators. `send(type,
 * description)` makes the report; its answer decides the thank-you line.
 */
export function reportDialog({ what, send, returnFocus }) {
  const dialog = shell(`Report this ${what}`, returnFocus);
  const descId = `report-desc-${serial}`;
  const status = h("p", { class: "form-status", role: "status" });
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Send report");
  const form = h("form", { class: "stack report-form" },
    h("p", { class: "muted" }, "Moderators read every report. The author is not told who reported."),
    h("fieldset", { class: "report-types" },
      h("legend", {}, `What is wrong with this ${what}?`),
      REPORT_TYPES.map(([code, label], i) => h("div", { class: "radio" },
        h("input", { type: "radio", name: "report_type", value: code, id: `report-type-${serial}-${i}`,
                     required: true }),
        h("label", { for: `report-type-${serial}-${i}` }, label)))),
    h("label", { for: descId }, "Anything moderators should know? (optional)"),
    h("textarea", { id: descId, name: "description", rows: 3, maxlength: 1000 }),
    h("div", { class: "dialog-actions" },
      h("button", { type: "button", class: "btn", onclick: () => dialog.close() }, "Cancel"), submit),
    status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const type = form.elements.report_type.value;
    const description = form.elements.description.value.trim();
    submit.disabled = true;
    status.textContent = "Sending…";
    try {
      const result = await send(type, description || null);
      const close = h("button", { type: "button", class: "btn btn-primary", onclick: () => dialog.close() }, "Close");
      form.replaceWith(h("div", { class: "stack report-done" },
        h("p", { role: "status" }, result?.created === false
          ? "You reported this already. Thanks, moderators will look."
          : "Thanks, moderators will look."),
        h("div", { class: "dialog-actions" }, close)));
      close.focus();
    } catch (err) {
      submit.disabled = false;
      status.textContent = `Not sent: ${err.message}`;
    }
  });
  dialog.append(form);
  dialog.showModal();
  form.querySelector("input[type='radio']").focus();
}
