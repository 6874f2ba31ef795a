// Member text on the feed: names that respect anonymity, and URLs turned into safe links.
// User text only ever becomes text nodes; a link's href is built from a parsed http(s) URL.

import { h } from "./dom.js";

// Only http:// and https:// are ever matched, so `javascript:` and `data:` stay plain text.
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?'")\]}>*_~]+$/;

/** The name to show for a vybe or comment: the display name, else the id; "Anonymous" when withheld. */
export function nameOf(item) {
  if (!item || !item.user_id) return "Anonymous";
  return item.author_name || item.user_id;
}

/** `raw` (trimmed) when it parses as an absolute URL with one of `schemes` (default http, https), else null.
 * The browser parses an href exactly as URL() does, so what was checked is what a click opens. */
export function safeUrl(raw, schemes = ["http:", "https:"]) {
  try {
    const text = String(raw).trim();
    return schemes.includes(new URL(text).protocol) ? text : null;
  } catch {
    return null;
  }
}

/** An outbound link that opens in a new tab and passes nothing (no opener, no referrer, no rank). */
export function outLink(href, text, { ugc = true } = {}) {
  return h("a", { href, target: "_blank", rel: ugc ? "noopener noreferrer nofollow ugc" : "noopener noreferrer",
                  class: "ext-link" }, text);
}

/** `text` as nodes: plain runs as text, http(s) URLs as safe links (trailing punctuation left out). */
export function linkify(text) {
  const out = [];
  let last = 0;
  for (const match of String(text ?? "").matchAll(URL_RE)) {
    let raw = match[0];
    // A closing bracket belongs to the URL only when the URL opened one (Wikipedia-style paths).
    const trail = raw.match(TRAILING)?.[0] || "";
    raw = raw.slice(0, raw.length - trail.length);
    if (trail.startsWith(")") && raw.includes("(") && !raw.includes(")")) raw += ")";
    const href = safeUrl(raw);
    if (!href || raw.length < 10) continue;
    if (match.index > last) out.push(text.slice(last, match.index));
    out.push(outLink(href, raw));
    last = match.index + raw.length;
  }
  if (last < String(text ?? "").length) out.push(String(text).slice(last));
  return out;
}
