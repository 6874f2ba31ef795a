// Drawing one vybe (with its comments when open) into its <li>. Redrawn whole on every change;
// the element that had focus (by data-focus-key), an open picker or menu and a comment draft survive.

import { h, icon, timeEl } from "./dom.js";
import { reactionBar, shownTotal } from "./feed-reactions.js";
import { linkify, nameOf } from "./feed-text.js";

const TYPES = { REFLECTION: "Reflection", MILESTONE: "Milestone", INSPIRATION: "Inspiration",
                GRATITUDE: "Gratitude", PROGRESS_UPDATE: "Progress update" };

/**
 * ctx: me, expanded (Set), threads (Map), mine (Map), drafts (Map), tools (feed-tools.js),
 * toggleReaction(id, type), openThread(id), closeThread(id), sendComment(vybeId, content).
 */
export function vybeRenderer(ctx) {
  const you = (item) => (item.user_id && item.user_id === ctx.me ? h("span", { class: "muted" }, " (you)") : null);

  function commentItem(v, c) {
    return h("li", { class: "comment", dataset: { commentId: c.id } },
      h("div", { class: "comment-head" },
        h("span", { class: "author" }, nameOf(c), you(c)),
        h("span", { class: "muted comment-time" }, timeEl(c.created_at)),
        ctx.tools.itemMenu("comment", v.id, c)),
      h("p", {}, linkify(c.content)));
  }

  function threadPanel(v, panelId) {
    const t = ctx.threads.get(v.id) || { items: new Map() };
    const inputId = `vybe-${v.id}-comment-input`;
    const input = h("input", { type: "text", id: inputId, maxlength: 2000, required: true, autocomplete: "off",
                               dataset: { focusKey: "comment-input" } });
    input.value = ctx.drafts.get(v.id) || "";
    input.addEventListener("input", () => ctx.drafts.set(v.id, input.value));
    const status = h("span", { class: "form-status", role: "status" });
    const form = h("form", { class: "comment-form" },
      h("label", { for: inputId }, "Add a comment"),
      h("div", { class: "comment-row" }, input,
        h("button", { type: "submit", class: "btn btn-primary", dataset: { focusKey: "comment-send" } }, "Send")),
      status);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const content = input.value.trim();
      if (!content) return;
      try {
        await ctx.sendComment(v.id, content);
      } catch (err) {
        status.textContent = `Not sent: ${err.message}`;
      }
    });
    const items = [...t.items.values()].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
    return h("section", { class: "thread", id: panelId, "aria-label": "Comments" },
      t.loading && !items.length ? h("p", { class: "muted" }, "Loading comments…") : null,
      !t.loading && !items.length ? h("p", { class: "muted" }, "No comments yet.") : null,
      h("ol", { class: "comments" }, items.map((c) => commentItem(v, c))),
      form);
  }

  return function renderVybe(li, v) {
    const active = li.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    const open = ctx.expanded.has(v.id);
    const titleId = `vybe-${v.id}-by`;
    const panelId = `vybe-${v.id}-comments`;
    const pickerOpen = li.querySelector("details.more-reactions")?.open;
    const mine = ctx.mine.get(v.id) || new Set();
    const total = shownTotal(v, mine);

    const toggle = h("button", {
      type: "button", class: "btn btn-quiet btn-comments", "aria-expanded": open ? "true" : "false",
      "aria-controls": panelId, dataset: { focusKey: "comments" },
      onclick: () => (open ? ctx.closeThread(v.id) : ctx.openThread(v.id)),
    }, icon("comment"), h("span", { class: "comment-count" }, `${v.comment_count || 0}`),
       h("span", {}, v.comment_count === 1 ? " comment" : " comments"));

    const article = h("article", { class: "vybe card", "aria-labelledby": titleId, tabindex: "-1",
                                   dataset: { vybeId: v.id, state: v.moderation_state, focusKey: "article" } },
      h("header", { class: "vybe-head" },
        h("span", { id: titleId, class: "author" }, nameOf(v), you(v)),
        h("span", { class: "badge" }, TYPES[v.type] || v.type),
        h("span", { class: "muted vybe-time" }, timeEl(v.created_at)),
        ctx.tools.itemMenu("vybe", v.id, v)),
      h("p", { class: "vybe-content" }, linkify(v.content)),
      h("footer", { class: "vybe-foot" },
        h("span", { class: "reaction-count" },
          h("strong", { class: "reaction-number" }, `${total}`), total === 1 ? " reaction" : " reactions"),
        reactionBar(v, mine, (code) => ctx.toggleReaction(v.id, code), pickerOpen),
        toggle,
        v.share_count ? h("span", { class: "muted" }, `${v.share_count} shared`) : null),
      open ? threadPanel(v, panelId) : null);
    li.replaceChildren(article);
    // A redraw (a live update, a re-read) keeps focus where it was, the card itself included.
    if (active) li.querySelector(`[data-focus-key="${active}"]`)?.focus({ preventScroll: true });
  };
}
