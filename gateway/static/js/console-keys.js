// The console's keyboard shortcuts (one key each, no modifiers) and the `?` help dialog that lists
// them. Keys act only while the flagged queue is shown, never while typing in a field, and never
// under an open dialog (a dialog handles its own keys).

const TYPING = new Set(["text", "search", "password", "email", "number", "url"]);

function isTyping(el) {
  if (!el || el === document.body) return false;
  if (el.isContentEditable) return true;
  if (el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  return el.tagName === "INPUT" && TYPING.has(el.type);
}

/**
 * handlers: key -> function ("j", "k", "c", "h", "r", "d", "s", "u", "o", "x", "n", "/", "?").
 * active(): whether the queue is on screen. ArrowDown/ArrowUp act as j/k outside tabs and fields.
 */
export function setupKeys(handlers, active) {
  document.addEventListener("keydown", (ev) => {
    if (ev.defaultPrevented || ev.altKey || ev.ctrlKey || ev.metaKey || ev.isComposing) return;
    if (document.querySelector("dialog[open]") || !active()) return;
    const target = ev.target;
    if (isTyping(target)) {
      if (ev.key === "Escape") target.blur();
      return;
    }
    let key = ev.key;
    if (key === "ArrowDown" || key === "ArrowUp") {
      if (target?.getAttribute?.("role") === "tab") return;
      key = key === "ArrowDown" ? "j" : "k";
    }
    const run = handlers[key.length === 1 ? key.toLowerCase() : key];
    if (key === "?" && handlers["?"]) {
      ev.preventDefault();
      handlers["?"]();
    } else if (run && (key.length === 1 || key === "Escape")) {
      ev.preventDefault();
      run();
    }
  });
}

/** Wire a <dialog> opened by `opener` (and by show()); its [data-close] buttons close it. Focus goes
 *  back where it was. */
export function setupDialog(dialog, opener) {
  let back = null;
  function show() {
    back = document.activeElement;
    dialog.showModal();
  }
  opener?.addEventListener("click", show);
  for (const btn of dialog.querySelectorAll("[data-close]")) btn.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => back?.focus?.());
  return { show };
}
