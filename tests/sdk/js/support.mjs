// Helpers for the SDK tests: tokens minted here (HS256 with node:crypto), clients closed after
// each test, waiting for client events, a WebSocket that records frames, and the control
// endpoint of tests/sdk/test_js_sdk.py (stop / start the restartable gateway).
//
// Environment (set by tests/sdk/test_js_sdk.py):
//   VYBE_WS_URL          ws://127.0.0.1:PORT/ws of a gateway on the test services
//   VYBE_JWT_SECRET      its HS256 secret
//   VYBE_RESTART_WS_URL  a second gateway (same services) that VYBE_CONTROL_URL stops and starts
//   VYBE_CONTROL_URL     http://127.0.0.1:PORT: POST /stop, POST /start, POST /restart
//   VYBE_TOKEN_WARN_S    the gateways' token_warn_s (their jwt_leeway_s is 0)

import { createHmac, randomBytes } from "node:crypto";
import { after, afterEach } from "node:test";

import { VybeClient } from "../../../gateway/static/js/vybe-client.js";

export { CommandError, VybeClient } from "../../../gateway/static/js/vybe-client.js";

export const WS_URL = process.env.VYBE_WS_URL || "";
export const SECRET = process.env.VYBE_JWT_SECRET || "";
export const RESTART_WS_URL = process.env.VYBE_RESTART_WS_URL || "";
export const CONTROL_URL = process.env.VYBE_CONTROL_URL || "";
export const TOKEN_WARN_S = Number(process.env.VYBE_TOKEN_WARN_S || "60");

/** Skip reason when no gateway is configured (node --test run by hand), else false. */
export const NO_GATEWAY = WS_URL && SECRET ? false : "VYBE_WS_URL / VYBE_JWT_SECRET unset (run tests/sdk/test_js_sdk.py)";

const b64url = (data) => Buffer.from(data).toString("base64url");

/** A JWT as the gateway accepts it: HS256, sub, role, iat, nbf, exp (and name when given). */
export function mint(sub, { role = "MEMBER", ttl = 3600, name, secret = SECRET, now } = {}) {
  const iat = now ?? Math.floor(Date.now() / 1000);
  const claims = { sub, role, iat, nbf: iat, exp: iat + ttl };
  if (name) claims.name = name;
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** A user id unique to this run (the gateways share one database across test files). */
export function uid(prefix) {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const open = new Set();
afterEach(() => {
  for (const c of open) c.close();
  open.clear();
});
after(() => {
  for (const c of open) c.close();
});

/** A VybeClient on the main gateway (fast backoff for tests), closed after the test. */
export function client(options = {}) {
  const c = new VybeClient({ url: WS_URL, backoff: { minMs: 50, maxMs: 400 }, ...options });
  open.add(c);
  return c;
}

/** Resolves with the first detail of client event `name` that `match` accepts (rejects after `ms`). */
export function next(c, name, match = () => true, ms = 5000) {
  const promise = new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no "${name}" event in ${ms} ms`)); }, ms);
    const off = c.on(name, (detail) => {
      if (!match(detail)) return;
      clearTimeout(timer);
      off();
      resolve(detail);
    });
  });
  promise.catch(() => {});  // awaited by the test; not an unhandled rejection once a test has failed
  return promise;
}

/** The first event message on `channel` that `match` accepts. */
export function nextEvent(c, channel, match = () => true, ms = 5000) {
  return next(c, "event", (msg) => msg.channel === channel && match(msg), ms);
}

/** Every detail of client event `name`, collected from now on. */
export function collect(c, name) {
  const items = [];
  c.on(name, (detail) => items.push(detail));
  return items;
}

/**
 * A WebSocket class that records what goes out (parsed frames) and what comes in (messages);
 * `hooks.onSend(ws, frame)` runs after each send.
 */
export function recordingWebSocket(hooks = {}) {
  const sent = [];
  const received = [];
  const sockets = [];
  class Recording extends globalThis.WebSocket {
    constructor(...args) {
      super(...args);
      sockets.push(this);
      this.addEventListener("message", (ev) => {
        if (typeof ev.data === "string") received.push(...JSON.parse(ev.data));
      });
    }

    send(data) {
      super.send(data);
      const frame = JSON.parse(data);
      sent.push(frame);
      hooks.onSend?.(this, frame);
    }
  }
  return { WebSocket: Recording, sent, received, sockets };
}

/** Ask tests/sdk/test_js_sdk.py to stop / start / restart the restartable gateway. */
export async function control(action) {
  const res = await fetch(`${CONTROL_URL}/${action}`, { method: "POST" });
  const body = await res.text();
  if (!res.ok) throw new Error(`control ${action}: ${res.status} ${body}`);
  return JSON.parse(body);
}
