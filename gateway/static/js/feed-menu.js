// The actions menu on a vybe or comment (menu button pattern): a real button with
// aria-haspopup/aria-expanded; arrows, Home and End move, Escape closes and returns to the
// button, Tab or a click elsewhere closes. Live updates re-render items while a menu is open,
// so which menu is open lives here (by key) and a re-rendered menu comes back open.

import { h, icon } from "./dom.js";

let openKey = null;

function items(wrap) {
  return [...wrap.querySelectorAll("[role='menuitem']")];
}

function setOpen(wrap, open, focus = null) {
  const button = wrap.querySelector(".btn-menu");
  const list = wrap.querySelector("[role='menu']");
  list.hidden = !open;
  button.setAttribute("aria-expanded", open ? "true" : "false");
  if (open) openKey = wrap.dataset.menuKey;
  else if (openKey === wrap.dataset.menuKey) openKey = null;
  if (focus === "button") button.focus();
  else if (focus === "first") items(wrap)[0]?.focus();
  else if (focus === "last") items(wrap).at(-1)?.focus();
}

function onMenuKey(wrap, ev) {
  const all = items(wrap);
  const at = all.indexOf(document.activeElement);
  const move = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 }[ev.key];
  if (move !== undefined) {
    ev.preventDefault();
    all[(move + all.length) % all.length]?.focus();
  } else if (ev.key === "Escape") {
    ev.preventDefault();
    ev.stopPropagation();
    setOpen(wrap, false, "button");
  } else if (ev.key === "Tab") {
    setOpen(wrap, false);
  }
}

/**
 * A menu button. `key` names it across re-renders (and is its focus key); `entries` are
 * {label, onSelect, kind?} ("danger" styles it). The menu closes before `onSelect` runs.
 */
export function actionMenu(key, label, entries) {
  const buttonId = `menu-btn-${key}`;
  const listId = `menu-${key}`;
  const open = openKey === key;
  const wrap = h("div", { class: "menu-wrap", dataset: { menuKey: key } });
  const button = h("button", {
    type: "button", class: "btn btn-quiet btn-menu", id: buttonId, "aria-label": label, title: label,
    "aria-haspopup": "menu", "aria-expanded": open ? "true" : "false", "aria-controls": listId,
    dataset: { focusKey: `menu-${key}` },
    onclick: () => {
      const closed = wrap.querySelector("[role='menu']").hidden;
      setOpen(wrap, closed, closed ? "first" : null);
    },
    onkeydown: (ev) => {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        setOpen(wrap, true, ev.key === "ArrowDown" ? "first" : "last");
      } else if (ev.key === "Escape" && openKey === key) {
        ev.preventDefault();
        setOpen(wrap, false, "button");
      }
    },
  }, icon("dots"));
  const list = h("div", { class: "menu", role: "menu", id: listId, "aria-labelledby": buttonId, hidden: !open,
                          onkeydown: (ev) => onMenuKey(wrap, ev) },
    entries.map((entry, i) => h("button", {
      type: "button", role: "menuitem", tabindex: "-1", class: `menu-item${entry.kind ? ` menu-item-${entry.kind}` : ""}`,
      dataset: { focusKey: `menu-${key}-${i}` },
      onclick: () => {
        setOpen(wrap, false, "button");
        entry.onSelect();
      },
    }, entry.label)));
  wrap.append(button, list);
  // Focus leaving the menu closes it; a re-render (wrap detached) keeps it open in its new copy.
  wrap.addEventListener("focusout", () => {
    setTimeout(() => {
      if (wrap.isConnected && openKey === key && !wrap.contains(document.activeElement)) setOpen(wrap, false);
    }, 0);
  });
  return wrap;
}

/** Close whatever menu is open when the pointer goes down elsewhere (a click on plain text moves no focus). */
export function closeMenusOnOutsideClick() {
  document.addEventListener("pointerdown", (ev) => {
    if (!openKey) return;
    const wrap = document.querySelector(`.menu-wrap[data-menu-key="${CSS.escape(openKey)}"]`);
    if (wrap && !wrap.contains(ev.target)) setOpen(wrap, false);
  });
}
