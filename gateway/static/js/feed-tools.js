// The member tools behind each vybe's and comment's actions menu: report (socket `report`),
// block and unblock (socket; the answer is the whole block list), delete your own (REST DELETE,
// after a confirmation), and the appeal of a moderation outcome (socket `appeal`). The socket
// commands go through the page's VybeClient (vybe-client.js).

import { announce, clearNotice, h, notice } from "./dom.js";
import { confirmDialog, reportDialog } from "./feed-dialogs.js";
import { actionMenu } from "./feed-menu.js";
import { nameOf } from "./feed-text.js";

const TARGET = { vybe: "SHARED_VYBE", comment: "COMMENT" };

/**
 * ctx: client (a VybeClient), rest, blocks (feed-blocks.js), isMine(item), applyBlocks(list, names),
 * vybeDeleted(id), commentDeleted(vybeId, commentId).
 */
export function memberTools(ctx) {
  const { client, rest, blocks } = ctx;
  const title = () => document.getElementById("feed-title");
  const blockKey = (uid) => `block-${encodeURIComponent(uid)}`;

  function menuFocus(key) {
    return () => (document.getElementById(`menu-btn-${key}`) || title()).focus();
  }

  function report(kind, id, returnFocus) {
    reportDialog({
      what: kind, returnFocus,
      send: (type, description) => client.report(TARGET[kind], id, type, description ? { description } : {}),
    });
  }

  async function block(uid, name) {
    try {
      const r = await client.block(uid);
      ctx.applyBlocks(r.blocked, { [uid]: name });
      const undo = h("button", { type: "button", class: "btn", onclick: () => unblock(uid) }, "Undo");
      notice(`You blocked ${name}. You won't see their vybes or comments; they are not told.`,
             { key: blockKey(uid), actions: [undo] });
      title().focus({ preventScroll: true });
    } catch (err) {
      notice(`Could not block ${name}: ${err.message}`, { kind: "error", key: "block" });
    }
  }

  async function unblock(uid) {
    const name = blocks.name(uid);
    try {
      const r = await client.unblock(uid);
      clearNotice(blockKey(uid));
      ctx.applyBlocks(r.blocked);
      announce(`You unblocked ${name}.`);
    } catch (err) {
      notice(`Could not unblock ${name}: ${err.message}`, { kind: "error", key: "block" });
    }
  }

  /** Confirm, then DELETE `path`; true when it is gone (a 404 means it already was). */
  async function confirmDelete(kind, text, path, returnFocus) {
    const sure = await confirmDialog({ title: `Delete this ${kind}?`, text, confirm: `Delete ${kind}`,
                                       cancel: "Keep it", returnFocus });
    if (!sure) return false;
    try {
      await rest.del(path);
    } catch (err) {
      if (err.status !== 404) {
        notice(`Not deleted: ${err.message}`, { kind: "error", key: "delete" });
        return false;
      }
    }
    announce(`Your ${kind} was deleted.`);
    return true;
  }

  async function remove(kind, vybeId, item, returnFocus) {
    if (kind === "vybe") {
      const text = "It is deleted for good, with its comments and reactions.";
      if (await confirmDelete(kind, text, `/api/vybes/${encodeURIComponent(item.id)}`, returnFocus)) {
        ctx.vybeDeleted(item.id);
        title().focus({ preventScroll: true });
      }
    } else {
      const text = "It is deleted for good, with any replies to it.";
      if (await confirmDelete(kind, text, `/api/comments/${encodeURIComponent(item.id)}`, returnFocus)) {
        ctx.commentDeleted(vybeId, item.id);
      }
    }
  }

  /** The actions menu for a vybe or comment: Report and Block for others' content, Delete for yours. */
  function itemMenu(kind, vybeId, item) {
    const key = `${kind === "vybe" ? "v" : "c"}-${item.id}`;
    const back = menuFocus(key);
    const name = nameOf(item);
    const own = ctx.isMine(item);
    const entries = own
      ? [{ label: `Delete this ${kind}`, kind: "danger", onSelect: () => remove(kind, vybeId, item, back) }]
      : [{ label: `Report this ${kind}`, onSelect: () => report(kind, item.id, back) },
         item.user_id ? { label: `Block ${name}`, onSelect: () => block(item.user_id, name) } : null]
        .filter(Boolean);
    return actionMenu(key, own ? `Actions for your ${kind}` : `Actions for the ${kind} by ${name}`, entries);
  }

  function sendAppeal(d, statement) {
    return client.appeal(d.target_type === "comment" ? "COMMENT" : "SHARED_VYBE", d.target_id, statement);
  }

  return { itemMenu, unblock, sendAppeal };
}
