// What both pages do with the socket's notices (the VybeClient's "notice" event).

import { h, notice, clearNotice } from "./dom.js";
import { claimsOf, storeToken } from "./session.js";

/** token_expiring: offer to paste a fresh token; going_away: say we are moving; gap: the page refetches.
 *  `client` is the page's VybeClient (it has no getToken: the member pastes the fresh token). */
export function noticeHandler(client, storageKey, onGap) {
  return (msg) => {
    if (msg.code === "token_expiring") {
      const at = msg.data?.expires_at ? new Date(msg.data.expires_at) : null;
      const when = at && !Number.isNaN(at.getTime()) ? ` at ${at.toLocaleTimeString()}` : " soon";
      const input = h("input", { type: "password", id: "renew-token", autocomplete: "off", spellcheck: "false",
                                 class: "input-inline" });
      const status = h("span", { class: "form-status", role: "status" });
      const form = h("form", { class: "renew" },
        h("label", { for: "renew-token" }, "New token"), input,
        h("button", { type: "submit", class: "btn btn-primary" }, "Renew session"), status);
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        const mine = claimsOf(client.token)?.sub;
        if (claimsOf(token)?.sub !== mine) {
          status.textContent = `That token is for another user; paste one for ${mine}.`;
          return;
        }
        try {
          await client.refreshToken(token);
          storeToken(storageKey, token);
          clearNotice("token");
        } catch (err) {
          status.textContent = `Not renewed: ${err.message}`;
        }
      });
      notice(`Your session expires${when}. Paste a fresh token to stay connected.`,
             { kind: "warn", key: "token", actions: [form] });
    } else if (msg.code === "going_away") {
      notice("The server is restarting; reconnecting to another node…", { kind: "info", key: "going" });
      setTimeout(() => clearNotice("going"), 4000);
    } else if (msg.code === "gap") {
      onGap?.(msg.data?.channel);
    }
  };
}

export function authLostReason(code) {
  if (code === 4004) return "Your session expired. Sign in again with a fresh token.";
  if (code === 4003) return "The server refused that token. Sign in with a valid one.";
  return "You were signed out. Sign in again.";
}
