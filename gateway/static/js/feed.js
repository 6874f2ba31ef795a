// /: the live feed. Initial page from REST, then `feed` live (new vybes wait behind a
// "N new vybes" pill; hidden, removed and blocked ones disappear), `vybe:{id}` for the newest
// visible vybes (the reaction breakdown and comment counts tick, comments stream into expanded
// threads), and `user:{me}` (moderation outcomes with appeals, care notices, block changes).
// Reconnects resume every channel by offset. Members report, block and delete from a menu on
// every vybe and comment (feed-tools.js); each vybe is drawn by feed-render.js.

import { api } from "./api.js";
import { authLostReason, noticeHandler } from "./common.js";
import { announce, h, icon, notice, tickTimes } from "./dom.js";
import { Blocks, renderBlocked } from "./feed-blocks.js";
import { closeMenusOnOutsideClick } from "./feed-menu.js";
import { showCare, showOutcome } from "./feed-notices.js";
import { applyDelta } from "./feed-reactions.js";
import { vybeRenderer } from "./feed-render.js";
import { memberTools } from "./feed-tools.js";
import { hold, pageClient, release, statusRenderer } from "./live.js";
import { setupSession } from "./session.js";

const STORAGE_KEY = "vybe.feed.token";
const LIVE_VYBES = 50;           // vybe:{id} channels held (the connection allows 64)
const PAGE = 20;
const REVIEWED = { hide: " and hid it", remove: " and removed it", dismiss: " and left it up" };

const session = setupSession(STORAGE_KEY, start);

/** Ids of what this member wrote in this tab: anonymous content carries no author, even to its author. */
function authoredStore(me) {
  const key = `vybe.feed.authored.${me}`;
  let ids = [];
  try { ids = JSON.parse(sessionStorage.getItem(key) || "[]"); } catch { ids = []; }
  const set = new Set(ids);
  return {
    has: (id) => set.has(id),
    add(id) {
      set.add(id);
      sessionStorage.setItem(key, JSON.stringify([...set].slice(-200)));
    },
  };
}

function start(token, claims) {
  const me = claims.sub;
  const rest = api(() => client.token);
  const vybes = new Map();        // id -> vybe shown
  const pending = new Map();      // id -> live vybe from someone else, waiting behind the pill
  let skippedNew = 0;             // new vybes a digest counted but did not carry (shown after a re-read)
  const gone = new Set();         // hidden / removed / deleted ids (a late snapshot must not revive them)
  const nodes = new Map();        // id -> <li>
  const expanded = new Set();     // ids whose comments are open
  const threads = new Map();      // id -> { items: Map, loading, next_cursor }
  const mine = new Map();         // id -> Set of reaction types this member gave it
  const drafts = new Map();       // id -> comment draft
  const stale = new Set();        // ids whose data changed since their <li> was drawn
  const reading = new Map();      // id -> whether an event touched it while a REST read of it was in flight
  let feedRead = null;            // ids touched by events while a whole-feed read was in flight
  const rereads = new Map();      // id -> timer of a pending re-read (its breakdown disagreed with an event)
  const blocks = new Blocks(me);
  const authored = authoredStore(me);
  const feedEl = document.getElementById("feed");
  const pill = document.getElementById("new-pill");
  const blockedBox = document.getElementById("blocked-box");
  let nextCursor = null;
  let loading = null;

  // The socket is the SDK's (vybe-client.js): resumes every channel held by offset after a reconnect.
  const client = pageClient(token);
  client.on("status", statusRenderer(document.getElementById("conn")));
  client.on("event", onEvent);
  // A digest feed (the server coalesces new vybes): what it did not carry is fetched on the pill.
  client.on("digest", ({ channel, skipped }) => {
    if (channel !== "feed" || !skipped) return;
    skippedNew += skipped;
    updatePill();
  });
  client.on("auth", ({ result }) => {  // the server states the block list at auth: this page's copy stays exact
    if (Array.isArray(result?.blocked)) applyBlocks(result.blocked);
  });
  client.on("subscribed", ({ channel, result }) => {
    if (result.recovered === true) return;  // the missed events follow
    // First subscribe, or a resume that could not replay: read what the events would have said.
    if (channel === "feed") reloadFeed();
    else if (channel.startsWith("vybe:")) refreshVybe(channel.slice(5), result.recovered === false);
  });
  client.on("subscribeError", ({ channel, error }) => {
    if (channel.startsWith("vybe:") && (error.code === "not_found" || error.code === "content_unavailable")) {
      drop(channel.slice(5));
    }
  });
  client.on("notice", noticeHandler(client, STORAGE_KEY, (channel) => {
    if (channel === "feed") reloadFeed();
    else if (channel?.startsWith("vybe:")) refreshVybe(channel.slice(5), true);
  }));
  client.on("authLost", ({ code }) => session.showSignIn(authLostReason(code)));

  const isMine = (item) => item.user_id === me || authored.has(item.id);

  // -- live events --------------------------------------------------------------------

  function onEvent(msg) {
    const d = msg.data || {};
    const vid = msg.channel.startsWith("vybe:") ? msg.channel.slice(5) : null;
    const personal = msg.channel === `user:${me}`;
    switch (msg.event) {
      case "vybe.created":
        if (msg.channel === "feed") onCreated(d);
        return;
      case "vybe.hidden":
      case "vybe.removed":
      case "vybe.deleted":  // not sent yet (deletes announce nothing); handled for when they do
        pending.delete(d.id);
        updatePill();
        if (vybes.has(d.id)) {
          drop(d.id);
          if (msg.event !== "vybe.deleted") {
            announce(`A vybe was ${msg.event === "vybe.hidden" ? "hidden" : "removed"} by moderators`);
          }
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
        if (vid) onReaction(vid, d);
        return;
      case "comment.created":
        if (vid) onComment(d);
        return;
      case "comment.hidden":
      case "comment.removed":
      case "comment.deleted": {
        const t = vid && threads.get(vid);
        if (t && t.items.delete(d.id)) renderOne(vid);
        return;
      }
      case "vybe.shared":
        patch(d.vybe_id || vid, { share_count: d.share_count });
        return;
      case "moderation.outcome":
        if (personal) showOutcome(d, tools.sendAppeal);
        return;
      case "care.notice":
        if (personal) showCare(d);
        return;
      case "blocks.changed":
        if (personal && Array.isArray(d.blocked)) applyBlocks(d.blocked);
        return;
      case "report.resolved":
        if (personal) {
          const what = d.target_type === "comment" ? "comment" : d.target_type === "user" ? "member" : "vybe";
          notice(`Thank you: moderators reviewed a ${what} you reported${REVIEWED[d.outcome] || ""}.`,
                 { kind: "info", key: `report-${encodeURIComponent(d.target_id)}` });
        }
        return;
      default:
    }
  }

  /** A new vybe: yours goes straight in; others' wait behind the pill so the feed does not move. */
  function onCreated(d) {
    if (gone.has(d.id) || vybes.has(d.id) || blocks.has(d.user_id)) return;
    if (isMine(d)) {
      add(d);
      render();
      return;
    }
    pending.set(d.id, d);
    updatePill();
  }

  /** A read in flight may or may not include this event's change: read the vybe again once it lands. */
  function touched(id) {
    if (reading.has(id)) reading.set(id, true);
    feedRead?.add(id);
  }

  function onReaction(vybeId, d) {
    touched(vybeId);
    if (d.target_type === "COMMENT") {
      const c = threads.get(vybeId)?.items.get(d.target_id);
      if (c) { c.reaction_count = d.reaction_count; renderOne(vybeId); }
      return;
    }
    const v = vybes.get(vybeId);
    if (!v) return;
    if (d.user_id === me && d.reaction) {  // set only when the event reports one change (mine, from another tab)
      const set = mine.get(vybeId) || new Set();
      if (d.added) set.add(d.reaction); else set.delete(d.reaction);
      mine.set(vybeId, set);
    }
    const reactions = applyDelta(v.reactions, d.by_type);
    patch(vybeId, { reaction_count: d.reaction_count, reactions });
    // The event's count is the truth after its commit: a breakdown that disagrees (a read that already
    // held this change, then the event again) is read afresh.
    const sum = Object.values(reactions).reduce((a, b) => a + b, 0);
    if (sum !== d.reaction_count && !rereads.has(vybeId)) {
      rereads.set(vybeId, setTimeout(() => { rereads.delete(vybeId); refreshVybe(vybeId, false); }, 250));
    }
  }

  function onComment(c) {
    const vid = c.shared_vybe_id;
    const v = vybes.get(vid);
    touched(vid);
    if (!v || blocks.has(c.user_id)) return;
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
    if (gone.has(v.id) || blocks.has(v.user_id)) return;
    if (pending.delete(v.id)) updatePill();
    vybes.set(v.id, { ...vybes.get(v.id), ...v });
    stale.add(v.id);
    if (Array.isArray(v.my_reactions)) mine.set(v.id, new Set(v.my_reactions));
  }

  function patch(id, fields) {
    const v = vybes.get(id);
    if (!v) return;
    Object.assign(v, fields);
    renderOne(id);
  }

  /** Out of the feed for this page only (a block), unlike drop(), which also keeps it out. */
  function forget(id) {
    vybes.delete(id);
    expanded.delete(id);
    threads.delete(id);
  }

  function drop(id) {
    gone.add(id);
    pending.delete(id);
    forget(id);
    render();
  }

  async function reloadFeed() {
    if (loading) return loading;
    loading = (async () => {
      feedRead = new Set();
      try {
        const limit = Math.min(100, Math.max(PAGE, vybes.size));
        const shown = new Set(vybes.keys());  // what the snapshot can speak for: it is taken after this
        const page = await rest.get(`/api/feed?limit=${limit}`);
        const fresh = new Set(page.items.map((v) => v.id));
        const oldest = page.items.length ? Date.parse(page.items[page.items.length - 1].created_at) : -Infinity;
        // Anything we showed before asking, inside the snapshot's window but absent from it, was hidden or removed
        // meanwhile. A vybe that arrived while the snapshot was on its way (one just shared here, or its
        // vybe.created) may be newer than the snapshot: it stays.
        for (const v of [...vybes.values()]) {
          if (shown.has(v.id) && !fresh.has(v.id)
              && (page.next_cursor === null || Date.parse(v.created_at) >= oldest)) {
            vybes.delete(v.id);
          }
        }
        for (const v of page.items) if (!pending.has(v.id)) add(v);
        if (nextCursor === null || vybes.size <= page.items.length) nextCursor = page.next_cursor;
        render();
      } catch (err) {
        if (err.status === 401) session.showSignIn(authLostReason(4004));
        else notice(`Could not load the feed: ${err.message}`, { kind: "error", key: "load" });
      } finally {
        loading = null;
        const again = feedRead;
        feedRead = null;
        for (const id of again) if (vybes.has(id)) refreshVybe(id, false);
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
    const first = !reading.has(id);
    if (first) reading.set(id, false);
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
    } finally {
      if (first) {
        const again = reading.get(id);
        reading.delete(id);
        if (again && vybes.has(id)) refreshVybe(id, comments);
      }
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

  function closeThread(id) {
    expanded.delete(id);
    render();
    renderOne(id);
  }

  // -- the pill -------------------------------------------------------------------------

  function updatePill() {
    const n = pending.size + skippedNew;
    pill.hidden = n === 0;
    pill.replaceChildren(icon("up"), n === 1 ? "1 new vybe" : `${n} new vybes`);
  }

  function showPending() {
    if (skippedNew) {  // some new vybes were only counted: read the feed again, then show them all
      skippedNew = 0;
      reloadFeed().then(showPending);
      return;
    }
    const first = [...pending.values()].sort(order)[0];
    for (const v of [...pending.values()]) add(v);
    pending.clear();
    updatePill();
    render();
    document.getElementById("feed-title").scrollIntoView({ block: "start" });
    nodes.get(first?.id)?.querySelector("article")?.focus({ preventScroll: true });
  }

  // -- member tools ---------------------------------------------------------------------

  /** Take the server's block list: hide the newly blocked at once, reload for the unblocked. */
  function applyBlocks(list, names = {}) {
    const { added, removed } = blocks.replace(list, names);
    for (const uid of added) {
      for (const v of [...vybes.values()]) if (v.user_id === uid) forget(v.id);
      for (const v of [...pending.values()]) if (v.user_id === uid) pending.delete(v.id);
      for (const [vid, t] of threads) {
        const before = t.items.size;
        for (const c of [...t.items.values()]) if (c.user_id === uid) t.items.delete(c.id);
        if (t.items.size !== before) renderOne(vid);
      }
    }
    renderBlocked(blockedBox, blocks, tools.unblock);
    if (added.length) { updatePill(); render(); }
    if (removed.length) {
      reloadFeed();
      for (const id of expanded) refreshVybe(id, true);
    }
  }

  const tools = memberTools({
    client, rest, blocks, isMine, applyBlocks,
    vybeDeleted: drop,
    commentDeleted(vid, cid) {
      threads.get(vid)?.items.delete(cid);
      renderOne(vid);
      nodes.get(vid)?.querySelector(".btn-comments")?.focus();
      refreshVybe(vid, true);  // its replies went too, and the count
    },
  });

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
      } else if (stale.has(v.id)) {
        renderVybe(li, v);
      }
      if (feedEl.children[i] !== li) feedEl.insertBefore(li, feedEl.children[i] || null);
    });
    stale.clear();
    document.getElementById("feed-empty").hidden = list.length > 0 || pending.size > 0;
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
    for (const channel of client.channels) {
      if (channel.startsWith("vybe:") && !want.has(channel)) release(client, channel);
    }
    for (const channel of want) hold(client, channel);
  }

  const renderVybe = vybeRenderer({
    me, expanded, threads, mine, drafts, tools, toggleReaction, openThread, closeThread,
    async sendComment(vid, content) {
      const c = await client.comment(vid, content);
      authored.add(c.id);
      drafts.delete(vid);
      onComment(c);
      renderOne(vid);
      nodes.get(vid)?.querySelector(`#${CSS.escape(`vybe-${vid}-comment-input`)}`)?.focus();
    },
  });

  async function toggleReaction(id, reaction) {
    const set = mine.get(id) || new Set();
    mine.set(id, set);
    const on = set.has(reaction);
    try {
      const r = await (on ? client.unreact(id, reaction, { target_type: "SHARED_VYBE" })
                          : client.react(id, reaction, { target_type: "SHARED_VYBE" }));
      if (on) set.delete(reaction); else set.add(reaction);  // applied or already so: either way it is now
      const fields = { reaction_count: r.reaction_count };
      // Counts by type come from the channel's events; without the channel, count it here.
      if (r.applied && !client.has(`vybe:${id}`)) {
        fields.reactions = applyDelta(vybes.get(id)?.reactions, { [reaction]: on ? -1 : 1 });
      }
      patch(id, fields);
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
      const v = await client.postVybe(content, {
        vybe_type: document.getElementById("post-type").value,
        is_anonymous: document.getElementById("post-anon").checked,
      });
      authored.add(v.id);
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
  pill.addEventListener("click", showPending);
  closeMenusOnOutsideClick();
  renderBlocked(blockedBox, blocks, tools.unblock);

  tickTimes();
  hold(client, "feed");  // registered first, so it is also resubscribed first after a reconnect
  reloadFeed().then(() => {
    syncChannels(sorted());
    client.connect();
  });
}
