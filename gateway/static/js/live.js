// The pages' adapter over the SDK (vybe-client.js, which owns the socket: auth, command ids,
// timeouts, the offline queue, rate limit, reconnect and resume): a client for this page's
// origin, channel holding that reports refusals as events, and the #conn pill.

import { VybeClient } from "./vybe-client.js";

export { CommandError, VybeClient } from "./vybe-client.js";

/** A client for this page's gateway (same origin, /ws) with the token; connect() starts it. */
export function pageClient(token) {
  return new VybeClient({ token });
}

/** Hold a channel; a refusal comes as the client's "subscribeError" event, not as a rejection here. */
export function hold(client, channel) {
  client.subscribe(channel).catch(() => {});
}

/** Let a channel go, quietly. */
export function release(client, channel) {
  client.unsubscribe(channel).catch(() => {});
}

const PILL = { idle: "connecting", connecting: "connecting", open: "connecting", authed: "live",
               reconnecting: "reconnecting", closed: "offline" };
const SHOW_RECONNECTING_MS = 800;  // a reconnect that takes 50 ms still reads as one, not as a flicker

/**
 * The client's "status" listener that renders the #conn pill (data-state: connecting, live,
 * reconnecting, offline). After a drop it says "Reconnecting" until the session is back.
 */
export function statusRenderer(el) {
  let away = false;       // dropped, not authenticated again yet
  let since = 0;          // when "reconnecting" was first shown
  let timer = null;

  function show(state, text) {
    el.dataset.state = state;
    el.textContent = text;
  }

  return ({ state, delayMs, code }) => {
    clearTimeout(timer);
    timer = null;
    const pill = PILL[state] || state;
    if (pill === "reconnecting") {
      if (!away) since = Date.now();
      away = true;
      const secs = Math.round((delayMs || 0) / 1000);
      show("reconnecting", secs ? `Reconnecting in ${secs}s…` : "Reconnecting…");
      return;
    }
    if (pill === "connecting" && away) return;  // still the reconnect in progress
    if (pill === "live") {
      const wait = away ? since + SHOW_RECONNECTING_MS - Date.now() : 0;
      away = false;
      if (wait > 0) {
        timer = setTimeout(() => show("live", "Live"), wait);
        return;
      }
      show("live", "Live");
      return;
    }
    away = false;
    if (pill === "offline") {
      const why = code === 1009 ? "message too large" : code === 4003 || code === 4004 ? "signed out" : "";
      show("offline", why ? `Offline (${why})` : "Offline");
      return;
    }
    show(pill, "Connecting…");
  };
}
