// /: the live feed. Initial page from REST, then `feed` live (new vybes on top, hidden
// and removed ones disappear), `vybe:{id}` for the newest visible vybes (reaction and
// comment counts tick, comments stream into expanded threads), and `user:{me}`
// (moderation outcomes). Reconnects resume every channel by offset.

import { api } from "./api.js";
import { authLostReason, noticeHandler } from "./common.js";
import { announce, h, icon, notice, tickTimes, timeEl } from "./dom.js";
import { LiveSocket, statusRenderer } from "./live.js";
import { setupSession } from "./session.js";

const STORAGE_KEY = "vybe.feed.token";
const LIVE_VYBES = 50;           // vybe:{id} channels held (the connection allows 64)
const PAGE = 20;
const REACTIONS = [
  ["HEART", "Heart"], ["CLAP", "Clap"], ["FIRE", "Fire"], ["PEACE", "Peace"], ["INSPIRE", "Inspire"],
  ["STRENGTH", "Strength"], ["GRATITUDE", "Gratitude"], ["MINDFUL", "Mindful"],
];
const TYPES = { REFLECTION: "Reflection", MILESTONE: "Milestone", INSPIRATION: "Inspiration",
                GRATITUDE: "Gratitude", PROGRESS_UPDATE: "Progress update" };

const session = setupSession(STORAGE_KEY, start);

function start(token, claims) {
  const me = claims.sub;
  const rest = api(() => socket.token);
  const vybes = new Map();        // id -> vybe
  const gone = new Set();         // hidden / removed / deleted ids (a late snapshot must not revive them)
  const nodes = new Map();        // id -> <li>
  const expanded = new Set();     // ids whose comments are open
  const threads = new Map();      // id -> { items: Map, loading, next_cursor, error }
  const mine = new Map();         // id -> Set of reactions this user has on it (as far as we know)
  const drafts = new Map();       // id -> comment draft
  const feedEl = document.getElementById("feed");
  let nextCursor = null;
  let loading = null;

  const socket = new LiveSocket(token, {
    onStatus: statusRenderer(document.getElementById("conn")),
    onEvent,
    onSubscribed(channel, result) {
      if (result.recovered === true) return;
      if (channel === "feed") reloadFeed();
      else if (channel.startsWith("vybe:")) refreshVybe(channel.slice(5), result.recovered === false);
    },
    onSubscribeError(channel, err) {
      if (channel.startsWith("vybe:") && (err.code === "not_found" || err.code === "content_unavailable")) {
        drop(channel.slice(5));
      }
    },
    onNotice: noticeHandler(() => socket, STORAGE_KEY, (channel) => {
      if (channel === "feed") reloadFeed();
      else if (channel?.startsWith("vybe:")) refreshVybe(channel.slice(5), true);
    }),
    onAuthLost(code) { session.showSignIn(authLostReason(code)); },
  });

  // -- live events --------------------------------------------------------------------

  function onEvent(msg) {
    const d = msg.data || {};
    switch (msg.event) {
      case "vybe.created":
        if (msg.channel === "feed" && !gone.has(d.id) && !vybes.has(d.id)) {
          add(d);
          announce(`New vybe from ${d.user_id || "someone anonymous"}`);
          render();
        }
        return;
      case "vybe.hidden":
      case "vybe.removed":
        if (vybes.has(d.id)) {
          drop(d.id);
          announce(`A vybe was ${msg.event === "vybe.hidden" ? "hidden" : "removed"} by moderators`);
        }
        gone.add(d.id);
        return;
      case "vybe.restored":
        if (gone.has(d.id) || !vybes.has(d.id)) {
          gone.delete(d.id);
          refreshVybe(d.id, false);
        }
        return;
      case "reactions.changed":
        if (msg.channel.startsWith("vybe:")) onReaction(msg.channel.slice(5), d);
        return;
      case "comment.created":
        if (msg.channel.startsWith("vybe:")) onComment(d);
        return;
      case "comment.hidden":
      case "comment.removed": {
        const vid = msg.channel.startsWith("vybe:") ? msg.channel.slice(5) : null;
        const t = vid && threads.get(vid);
        if (t && t.items.delete(d.id)) renderOne(vid);
        return;
      }
      case "vybe.shared":
        patch(d.vybe_id || msg.channel.slice(5), { share_count: d.share_count });
        return;
      case "moderation.outcome":
        if (msg.channel === `user:${me}`) {
          const what = d.target_type === "comment" ? "comment" : "vybe";
          const verb = { hide: "hidden", remove: "removed", restore: "restored", dismiss: "reviewed and kept" }[d.action]
            || d.action;
          notice(`A moderator ${verb === "reviewed and kept" ? "" : "has "}${verb} your ${what}${d.note ? `: “${d.note}”` : "."}`,
                 { kind: d.action === "hide" || d.action === "remove" ? "warn" : "info" });
        }
        return;
      case "report.resolved":
        if (msg.channel === `user:${me}`) notice("Thank you: a report you made has been reviewed.", { kind: "info" });
        return;
      default:
    }
  }

  function onReaction(vybeId, d) {
    if (d.target_type === "COMMENT") {
      const t = threads.get(vybeId);
      const c = t?.items.get(d.target_id);
      if (c) { c.reaction_count = d.reaction_count; renderOne(vybeId); }
      return;
    }
    if (d.user_id === me && d.reaction) {  // set only when the event reports one change (mine, from another tab)
      const set = mine.get(vybeId) || new Set();
      if (d.added) set.add(d.reaction); else set.delete(d.reaction);
      mine.set(vybeId, set);
    }
    patch(vybeId, { reaction_count: d.reaction_count });
  }

  function onComment(c) {
    const vid = c.shared_vybe_id;
    const v = vybes.get(vid);
    if (!v) return;
    const t = threads.get(vid);
    if (t && !t.items.has(c.id)) t.items.set(c.id, c);
    const count = typeof c.comment_count === "number" ? c.comment_count : (v.comment_count || 0) + 1;
    patch(vid, { comment_count: Math.max(count, t ? t.items.size : 0) });
  }

  // -- state ----------------------------------------------------------------------------

  function order(a, b) {
    return Date.parse(b.created_at) - Date.parse(a.created_at) || (a.id < b.id ? 1 : -1);
  }

  function sorted() {
    return [...vybes.values()].sort(order);
  }

  function add(v) {
    if (gone.has(v.id)) return;
    vybes.set(v.id, { ...vybes.get(v.id), ...v });
  }

  function patch(id, fields) {
    const v = vybes.get(id);
    if (!v) return;
    Object.assign(v, fields);
    renderOne(id);
  }

  function drop(id) {
    gone.add(id);
    vybes.delete(id);
    expanded.delete(id);
    threads.delete(id);
    render();
  }

  async function reloadFeed() {
    if (loading) return loading;
    loading = (async () => {
      try {
        const limit = Math.min(100, Math.max(PAGE, vybes.size));
        const page = await rest.get(`/api/feed?limit=${limit}`);
        const fresh = new Set(page.items.map((v) => v.id));
        const oldest = page.items.length ? Date.parse(page.items[page.items.length - 1].created_at) : -Infinity;
        // Anything we show inside the snapshot's window but absent from it was hidden or removed meanwhile.
        for (const v of [...vybes.values()]) {
          if (!fresh.has(v.id) && (page.next_cursor === null || Date.parse(v.created_at) >= oldest)) {
            vybes.delete(v.id);
          }
        }
        for (const v of page.items) add(v);
        if (nextCursor === null || vybes.size <= page.items.length) nextCursor = page.next_cursor;
        render();
      } catch (err) {
        if (err.status === 401) session.showSignIn(authLostReason(4004));
        else notice(`Could not load the feed: ${err.message}`, { kind: "error", key: "load" });
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  async function loadMore() {
    if (!nextCursor) return;
    const btn = document.getElementById("load-more");
    btn.disabled = true;
    try {
      const page = await rest.get(`/api/feed?limit=${PAGE}&cursor=${encodeURIComponent(nextCursor)}`);
      for (const v of page.items) add(v);
      nextCursor = page.next_cursor;
      render();
    } catch (err) {
      notice(`Could not load older vybes: ${err.message}`, { kind: "error", key: "more" });
    } finally {
      btn.disabled = false;
    }
  }

  /** Re-read one vybe (counts after a missed stretch; reload its comments when open). */
  async function refreshVybe(id, comments) {
    try {
      const data = await rest.get(`/api/vybes/${encodeURIComponent(id)}`);
      add(data.vybe);
      if (expanded.has(id) || (comments && threads.has(id))) {
        threads.set(id, { items: new Map(data.comments.items.map((c) => [c.id, c])),
                          next_cursor: data.comments.next_cursor });
      }
      render();
    } catch (err) {
      if (err.status === 404 || err.status === 409) drop(id);
    }
  }

  async function openThread(id) {
    expanded.add(id);
    if (!threads.has(id)) threads.set(id, { items: new Map(), loading: true });
    render();  // subscribes to vybe:{id} if it was beyond the live window
    await refreshVybe(id, true);
    const t = threads.get(id);
    if (t) t.loading = false;
    renderOne(id);
  }

  // -- rendering ------------------------------------------------------------------------

  function render() {
    const list = sorted();
    const keep = new Set(list.map((v) => v.id));
    for (const [id, li] of nodes) {
      if (!keep.has(id)) { li.remove(); nodes.delete(id); }
    }
    list.forEach((v, i) => {
      let li = nodes.get(v.id);
      if (!li) {
        li = h("li", { class: "vybe-item" });
        nodes.set(v.id, li);
        renderVybe(li, v);
      }
      if (feedEl.children[i] !== li) feedEl.insertBefore(li, feedEl.children[i] || null);
    });
    document.getElementById("feed-empty").hidden = list.length > 0;
    document.getElementById("feed-count").textContent = list.length ? `${list.length} shown` : "";
    document.getElementById("load-more").hidden = !nextCursor;
    syncChannels(list);
  }

  function renderOne(id) {
    const li = nodes.get(id);
    const v = vybes.get(id);
    if (li && v) renderVybe(li, v);
  }

  /** Hold vybe:{id} for the newest LIVE_VYBES shown and every open thread; let go of the rest. */
  function syncChannels(list) {
    const want = new Set(list.slice(0, LIVE_VYBES).map((v) => `vybe:${v.id}`));
    for (const id of expanded) if (vybes.has(id)) want.add(`vybe:${id}`);
    for (const channel of [...socket.channels.keys()]) {
      if (channel.startsWith("vybe:") && !want.has(channel)) socket.unsubscribe(channel);
    }
    for (const channel of want) socket.subscribe(channel);
  }

  function renderVybe(li, v) {
    const active = li.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    const reacted = mine.get(v.id) || new Set();
    const open = expanded.has(v.id);
    const author = v.user_id || "Anonymous";
    const titleId = `vybe-${v.id}-by`;
    const panelId = `vybe-${v.id}-comments`;

    const heart = h("button", {
      type: "button", class: `btn btn-react${reacted.has("HEART") ? " is-on" : ""}`,
      "aria-pressed": reacted.has("HEART") ? "true" : "false", dataset: { focusKey: "react-HEART" },
      onclick: () => toggleReaction(v.id, "HEART"),
    }, icon("heart"), h("span", {}, "Heart"));
    const more = h("details", { class: "more-reactions" },
      h("summary", { class: "btn btn-quiet", dataset: { focusKey: "more" } }, "More reactions"),
      h("div", { class: "reaction-menu", role: "group", "aria-label": "Reactions" },
        REACTIONS.slice(1).map(([code, label]) => h("button", {
          type: "button", class: `btn btn-chip${reacted.has(code) ? " is-on" : ""}`,
          "aria-pressed": reacted.has(code) ? "true" : "false", dataset: { focusKey: `react-${code}` },
          onclick: () => toggleReaction(v.id, code),
        }, label))));
    const wasOpen = li.querySelector("details.more-reactions")?.open;
    if (wasOpen) more.open = true;

    const toggle = h("button", {
      type: "button", class: "btn btn-quiet btn-comments", "aria-expanded": open ? "true" : "false",
      "aria-controls": panelId, dataset: { focusKey: "comments" },
      onclick: () => (open ? closeThread(v.id) : openThread(v.id)),
    }, icon("comment"), h("span", { class: "comment-count" }, `${v.comment_count || 0}`),
       h("span", {}, v.comment_count === 1 ? " comment" : " comments"));

    const article = h("article", { class: "vybe card", "aria-labelledby": titleId,
                                   dataset: { vybeId: v.id, state: v.moderation_state } },
      h("header", { class: "vybe-head" },
        h("span", { id: titleId, class: "author" }, author, v.user_id === me ? h("span", { class: "muted" }, " (you)") : null),
        h("span", { class: "badge" }, TYPES[v.type] || v.type),
        h("span", { class: "muted vybe-time" }, timeEl(v.created_at))),
      h("p", { class: "vybe-content" }, v.content),
      h("footer", { class: "vybe-foot" },
        h("span", { class: "reaction-count" },
          h("strong", { class: "reaction-number" }, `${v.reaction_count}`), v.reaction_count === 1 ? " reaction" : " reactions"),
        heart, more, toggle,
        v.share_count ? h("span", { class: "muted" }, `${v.share_count} shared`) : null),
      open ? threadPanel(v, panelId) : null);
    li.replaceChildren(article);
    if (active) li.querySelector(`[data-focus-key="${active}"]`)?.focus();
  }

  function threadPanel(v, panelId) {
    const t = threads.get(v.id) || { items: new Map() };
    const inputId = `vybe-${v.id}-comment-input`;
    const input = h("input", { type: "text", id: inputId, maxlength: 2000, required: true, autocomplete: "off",
                               dataset: { focusKey: "comment-input" } });
    input.value = drafts.get(v.id) || "";
    input.addEventListener("input", () => drafts.set(v.id, input.value));
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
        const c = await socket.command("comment", { vybe_id: v.id, content });
        drafts.delete(v.id);
        onComment(c);
        renderOne(v.id);
        nodes.get(v.id)?.querySelector(`#${CSS.escape(inputId)}`)?.focus();
      } catch (err) {
        status.textContent = `Not sent: ${err.message}`;
      }
    });
    const items = [...t.items.values()].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
    return h("section", { class: "thread", id: panelId, "aria-label": "Comments" },
      t.loading && !items.length ? h("p", { class: "muted" }, "Loading comments…") : null,
      !t.loading && !items.length ? h("p", { class: "muted" }, "No comments yet.") : null,
      h("ol", { class: "comments" }, items.map((c) => h("li", { class: "comment", dataset: { commentId: c.id } },
        h("span", { class: "author" }, c.user_id || "Anonymous"), " ",
        h("span", { class: "muted" }, timeEl(c.created_at)),
        h("p", {}, c.content)))),
      form);
  }

  function closeThread(id) {
    expanded.delete(id);
    render();
    renderOne(id);
  }

  async function toggleReaction(id, reaction) {
    const set = mine.get(id) || new Set();
    mine.set(id, set);
    const on = set.has(reaction);
    try {
      const r = await socket.command(on ? "unreact" : "react",
                                     { target_type: "SHARED_VYBE", target_id: id, reaction });
      if (on) set.delete(reaction); else set.add(reaction);  // applied or already so: either way it is now
      patch(id, { reaction_count: r.reaction_count });
    } catch (err) {
      if (err.code === "content_unavailable" || err.code === "not_found") drop(id);
      else notice(`Reaction not saved: ${err.message}`, { kind: "error", key: "react" });
    }
  }

  // -- composer -------------------------------------------------------------------------

  const postForm = document.getElementById("post-form");
  const postStatus = document.getElementById("post-status");
  postForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = document.getElementById("post-content").value.trim();
    if (!content) return;
    const button = document.getElementById("post-submit");
    button.disabled = true;
    postStatus.textContent = "Sharing…";
    try {
      const v = await socket.command("post_vybe", {
        content,
        vybe_type: document.getElementById("post-type").value,
        is_anonymous: document.getElementById("post-anon").checked,
      });
      add(v);
      render();
      postForm.reset();
      postStatus.textContent = "Shared.";
      setTimeout(() => { if (postStatus.textContent === "Shared.") postStatus.textContent = ""; }, 4000);
    } catch (err) {
      postStatus.textContent = `Not shared: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  document.getElementById("load-more").addEventListener("click", loadMore);

  tickTimes();
  socket.subscribe("feed");  // registered first, so it is also resubscribed first after a reconnect
  reloadFeed().then(() => {
    syncChannels(sorted());
    socket.start();
  });
}
