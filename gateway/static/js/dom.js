// Small DOM helpers. User content only ever goes in as text (never innerHTML).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.setAttribute("style", value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = "http://www.w3.org/2000/svg";

/** A decorative inline icon (no icon fonts, nothing fetched). */
export function icon(name) {
  const paths = {
    heart: "M12 21s-7.5-4.6-9.6-9.2C1 8.6 3 5 6.6 5c2 0 3.4 1.1 4.4 2.6C12 6.1 13.4 5 15.4 5 19 5 21 8.6 19.6 11.8 17.5 16.4 12 21 12 21z",
    comment: "M4 5h16v11H9l-5 4V5z",
    dots: "M5 10a2 2 0 1 0 0 4 2 2 0 0 0 0-4zm7 0a2 2 0 1 0 0 4 2 2 0 0 0 0-4zm7 0a2 2 0 1 0 0 4 2 2 0 0 0 0-4z",
    up: "M12 5l-7 7h4.5v7h5v-7H19z",
  };
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", paths[name]);
  svg.append(path);
  return svg;
}

const rtf = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

export function timeAgo(value) {
  const t = typeof value === "number" ? value * 1000 : Date.parse(value);
  if (!Number.isFinite(t)) return "";
  const s = Math.round((t - Date.now()) / 1000);
  if (Math.abs(s) < 45) return "just now";
  const m = Math.round(s / 60);
  if (Math.abs(m) < 60) return rtf.format(m, "minute");
  const hr = Math.round(m / 60);
  if (Math.abs(hr) < 24) return rtf.format(hr, "hour");
  return rtf.format(Math.round(hr / 24), "day");
}

export function timeEl(value) {
  const t = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(t.getTime())) return h("span");
  return h("time", { datetime: t.toISOString(), title: t.toLocaleString(), "data-live-time": "" }, timeAgo(value));
}

/** Refresh every relative time on the page once a minute. */
export function tickTimes() {
  setInterval(() => {
    for (const el of document.querySelectorAll("time[data-live-time]")) {
      el.textContent = timeAgo(el.getAttribute("datetime"));
    }
  }, 30000);
}

/** Say something to screen-reader users without moving focus. */
export function announce(text) {
  const region = document.getElementById("announce");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

/** A dismissible banner in #notices. Returns the element (for later removal). */
export function notice(text, { kind = "info", key = null, actions = [] } = {}) {
  const box = document.getElementById("notices");
  if (key) box.querySelector(`[data-key="${key}"]`)?.remove();
  const el = h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status",
                        dataset: key ? { key } : {} },
    h("p", { class: "notice-text" }, text),
    actions,
    h("button", { type: "button", class: "btn btn-quiet notice-close", "aria-label": "Dismiss notice",
                  onclick: () => el.remove() }, "Dismiss"));
  box.append(el);
  return el;
}

export function clearNotice(key) {
  document.getElementById("notices").querySelector(`[data-key="${key}"]`)?.remove();
}
