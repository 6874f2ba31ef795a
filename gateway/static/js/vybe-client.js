// Vybe Live client SDK: one ES module, no dependencies, no build step. It runs in browsers,
// Node >= 20 (a global WebSocket with --experimental-websocket, or pass one) and React Native,
// and the gateway serves it at /static/js/vybe-client.js. The protocol it speaks is
// docs/protocol.md (JSON text frames; MessagePack is not spoken here).
//
//   import { VybeClient } from "/static/js/vybe-client.js";
//   const client = new VybeClient({ getToken: () => fetchToken() });
//   client.on("status", ({ state }) => render(state));
//   client.onChannel("feed", (msg) => show(msg.event, msg.data));
//   client.on("unrecovered", ({ channel }) => refetch(channel));
//   client.connect();
//   await client.subscribe("feed");
//   const vybe = await client.postVybe("Grateful for this morning", { vybe_type: "GRATITUDE" });
//
// What it does for you: the `auth` frame (again on `token_expiring` when it has `getToken`),
// a fresh `id` per command with acks and errors matched to it, command timeouts, commands
// queued while offline and sent after auth (an unanswered write goes again with the same
// `id`, so the server applies it once), a client-side token bucket under the server's rate
// limit, retries after `rate_limited` / `unavailable` / `internal` answers (with their
// `retry_after`), reconnects with full-jitter exponential backoff, and after each reconnect
// the held channels subscribed again with `since` = the last offset seen on each.

/**
 * @typedef {Object} BackoffOptions
 * @property {number} [minMs=500]    first reconnect delay cap (full jitter: a delay in [0, cap))
 * @property {number} [maxMs=15000]  the cap never grows past this
 */

/**
 * @typedef {Object} RateLimitOptions
 * @property {number} [perSecond=15]  tokens added per second (the server allows 20 by default)
 * @property {number} [burst=30]      bucket size (the server allows 40 by default)
 */

/**
 * @typedef {Object} VybeClientOptions
 * @property {string} [url]  the socket URL, e.g. "wss://vybe.example/ws"; in a browser it defaults
 *   to the page's origin + "/ws"
 * @property {string} [token]  a JWT (for the first `auth`; replace it with refreshToken())
 * @property {() => (string|Promise<string>)} [getToken]  called for the first `auth`, on every
 *   `token_expiring` notice (the fresh token is sent on the same socket), and before a reconnect
 *   when the token held is missing or about to expire
 * @property {any} [WebSocket]  a WebSocket constructor (default globalThis.WebSocket)
 * @property {string|string[]} [protocols]  WebSocket subprotocols to offer (JSON ones only)
 * @property {number} [commandTimeoutMs=20000]  a command not answered in this time rejects
 *   with CommandError code "timeout" (counted from the call, queueing included)
 * @property {BackoffOptions} [backoff]
 * @property {RateLimitOptions|false} [rateLimit]  false: no client-side limit
 * @property {number} [heartbeatMs=30000]  after this long without a frame from the server, a
 *   `ping`; no answer and the socket is dropped and reconnected (0: off)
 * @property {number} [retries=5]  how often one command is sent again, in all, after `rate_limited`,
 *   `unavailable` or `internal` answers (after `internal` once at most): same id, after the answer's
 *   retry_after, doubled per retry and jittered up to 1.5x (a write that landed is answered from its
 *   first result, not applied again); a retry whose answer could not come before `commandTimeoutMs`
 *   is not made: the refusal is the answer
 * @property {number} [maxFrameBytes=1048576]  a command whose frame is larger is refused here
 *   (CommandError "frame_too_large") instead of making the server close the socket (1009)
 */

/**
 * @typedef {Object} AuthResult
 * @property {string} user_id
 * @property {string} role
 * @property {number} expires_at
 * @property {string[]} [blocked]
 */

/**
 * @typedef {Object} SubscribeResult
 * @property {string} channel
 * @property {boolean|null} recovered  null: no `since` sent; true: the `missed` events follow;
 *   false: the offset was too old (or lost): refetch
 * @property {number} missed
 */

/**
 * @typedef {Object} EventMessage
 * @property {"event"} type
 * @property {string} channel
 * @property {string} offset
 * @property {string} event
 * @property {number} ts
 * @property {any} data
 */

/**
 * @typedef {Object} NoticeMessage
 * @property {"notice"} type
 * @property {"token_expiring"|"gap"|"going_away"|string} code
 * @property {string} message
 * @property {any} [data]
 */

/**
 * @typedef {Object} PublishResult
 * @property {string} channel
 * @property {string} id  the publication id
 * @property {"accepted"|"held"} state  accepted: stored, and delivered to every subscriber (you too) as a
 *   `publication` event carrying `id`; held: stored, delivered once moderation allows it
 * @property {boolean} replayed  a retry with the same id: nothing was published again
 */

/**
 * @typedef {"idle"|"connecting"|"open"|"authed"|"reconnecting"|"closed"} ConnectionState
 */

/**
 * @typedef {Object} StatusDetail
 * @property {ConnectionState} state
 * @property {number} [code]      the close code that led here
 * @property {string} [reason]    the close reason
 * @property {number} [delayMs]   (reconnecting) when the next attempt starts
 * @property {number} [attempt]   (connecting, reconnecting) attempts since the last auth
 * @property {string} [userId]    (authed)
 */

/**
 * Events (name: what the listener receives):
 * - "event": EventMessage, every event (then the onChannel() listeners of its channel)
 * - "notice": NoticeMessage, every notice (token_expiring, gap, going_away, ...)
 * - "gap": {channel, message, data}: the server lost events of `channel`; resync() or refetch
 * - "status": StatusDetail
 * - "auth": {result: AuthResult, refreshed: boolean}: each successful `auth` (refreshed: on the same socket)
 * - "subscribed": {channel, result: SubscribeResult, resumed: boolean, since: string|null}: every
 *   subscribe ack, the automatic ones after a reconnect included, and your own `user:` channel's (asked
 *   at auth for its resume point; it stays held whatever the answer)
 * - "digest": {channel, count, skipped, offset}: a digest channel's coalesced frame; its items came as
 *   events just before; `skipped` arrived but were not carried (refetch to show them)
 * - "recovered": {channel, missed, since}: a subscribe with `since` answered recovered: true
 *   (the missed events follow)
 * - "unrecovered": {channel, since, result}: a subscribe with `since` answered recovered: false,
 *   or a channel subscribed again after a reconnect with no offset to resume from (since: null):
 *   events may be missing; refetch
 * - "subscribeError": {channel, error: CommandError}: the channel was refused and is no longer held
 *   (your own `user:` channel excepted: only its catch-up failed, it stays held)
 * - "authLost": {code, reason, error}: close 4003 (refused) / 4004 (expired) / 4010 (your app's backend
 *   disconnected you); with getToken, a fresh token is tried once first; no reconnect until refreshToken() or
 *   connect()
 * - "error": {error, where}: what no promise reports (a listener that threw, getToken failing,
 *   a refresh refused, a server error without id)
 * @typedef {"event"|"digest"|"notice"|"gap"|"status"|"auth"|"subscribed"|"recovered"|"unrecovered"|"subscribeError"|"authLost"|"error"} ClientEventName
 */

const DEFAULT_TIMEOUT_MS = 20000;
const DEFAULT_BACKOFF = { minMs: 500, maxMs: 15000 };
const DEFAULT_RATE = { perSecond: 15, burst: 30 };
const DEFAULT_HEARTBEAT_MS = 30000;
const DEFAULT_RETRIES = 5;
const HARD_FRAME_LIMIT = 1 << 20;      // the server closes with 1009 over this
const SOFT_FRAME_FLOOR = 4096;         // no server refuses frames under this with frame_too_large
const SEEN_PER_CHANNEL = 512;          // offsets remembered per channel, to drop a re-sync's duplicates
const AUTH_LOST = new Set([4003, 4004, 4010]);  // refused, expired, disconnected by the app's backend
const RETRYABLE = new Set(["rate_limited", "unavailable", "internal"]);
const ANSWER_ALLOWANCE_MS = 250;  // a caller's retry goes only if its answer can come before the caller's timeout
const WS_OPEN = 1;

/** A command's failure: the server's error `code` (see docs/protocol.md), or one of this client's:
 *  "timeout", "closed" (close() was called), "auth_lost" (4003/4004/4010), "frame_too_large",
 *  "unsubscribed" (a subscribe overtaken by unsubscribe()), "duplicate_id" (your own id, while a command with
 *  it is in flight), "invalid" (your own id over 64 characters). */
export class CommandError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {number|null} [retryAfter]  seconds, where waiting helps
   * @param {string|null} [id]  the command's id
   */
  constructor(code, message, retryAfter = null, id = null) {
    super(message || code);
    this.name = "CommandError";
    /** @type {string} */
    this.code = code;
    /** @type {number|null} */
    this.retryAfter = retryAfter ?? null;
    /** @type {string|null} */
    this.id = id;
  }
}

let idCounter = 0;

function randomPart() {
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === "function") {
    const a = c.getRandomValues(new Uint32Array(2));
    return a[0].toString(36) + a[1].toString(36);
  }
  return Math.random().toString(36).slice(2, 9) + Math.random().toString(36).slice(2, 9);
}

/** A fresh command id (at most 64 characters, as the protocol asks). */
export function newId(prefix = "c") {
  idCounter = (idCounter + 1) % 1e9;
  return `${String(prefix).slice(0, 16)}-${Date.now().toString(36)}-${randomPart()}-${idCounter.toString(36)}`;
}

function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) { n += 4; i++; }
    else n += 3;
  }
  return n;
}

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** The token's `exp` (unverified: only to know when to fetch a fresh one), or null. */
function tokenExpiry(token) {
  try {
    const part = String(token).split(".")[1].replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
    let bits = 0;
    let value = 0;
    let json = "";
    for (const ch of part) {
      const v = B64URL.indexOf(ch);
      if (v < 0) return null;
      value = ((value << 6) | v) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        json += String.fromCharCode((value >> bits) & 0xff);
      }
    }
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (loc && typeof loc.host === "string" && loc.host) {
    return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
  }
  return null;
}

export class VybeClient {
  /** @param {VybeClientOptions} [options] */
  constructor(options = {}) {
    const url = options.url || defaultUrl();
    if (!url) throw new TypeError("VybeClient: `url` is required outside a browser page");
    const WS = options.WebSocket || globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError("VybeClient: no WebSocket (pass options.WebSocket, or run Node with --experimental-websocket)");
    }
    if (!options.token && typeof options.getToken !== "function") {
      throw new TypeError("VybeClient: `token` or `getToken` is required");
    }
    this._url = url;
    this._WS = WS;
    this._protocols = options.protocols;
    this._token = options.token || null;
    this._getToken = typeof options.getToken === "function" ? options.getToken : null;
    this._timeoutMs = options.commandTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this._backoff = { ...DEFAULT_BACKOFF, ...(options.backoff || {}) };
    this._rate = options.rateLimit === false ? null : { ...DEFAULT_RATE, ...(options.rateLimit || {}) };
    this._bucket = { tokens: this._rate ? this._rate.burst : 0, last: Date.now() };
    this._heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this._retries = options.retries ?? DEFAULT_RETRIES;
    this._maxFrameBytes = Math.min(options.maxFrameBytes ?? HARD_FRAME_LIMIT, HARD_FRAME_LIMIT);

    /** @type {ConnectionState} */
    this._state = "idle";
    this._ws = null;            // the current socket (null between sockets)
    this._authed = false;
    this._session = null;       // the last auth result
    this._running = false;      // connect() called, not stopped since
    this._closed = false;       // close(): for good
    this._attempt = 0;
    this._reconnectTimer = null;
    this._openTimer = null;
    this._retryAfterMs = 0;     // an `unavailable` answer's wait, honoured by the next reconnect
    this._goingAway = false;
    this._needFreshToken = false;
    this._freshTokenTried = false;  // a refusal asked getToken() for a fresh token already (until a good auth)
    this._refused = null;           // {token, code, reason} of that refusal: the same token back is a sign-out
    this._authError = null;     // why the server refused the token (before its 4003)
    this._stopError = null;     // why it stopped by itself (authLost, 1009): what send() rejects with

    /** channel -> entry; insertion order is the resubscribe order */
    this._channels = new Map();
    this._pending = new Map();  // id -> command
    this._queue = [];           // user commands waiting for an authenticated socket or a rate token
    this._control = [];         // this socket's own commands (subscribe, unsubscribe, re-auth, ping): first
    this._sendSeq = 0;
    this._pumpTimer = null;
    this._hbTimer = null;
    this._lastRx = 0;
    this._refreshTimer = null;
    this._refreshing = false;
    this._lastRefreshAt = 0;
    this._readyWaiters = [];

    this._listeners = new Map();        // name -> Set(fn)
    this._channelListeners = new Map(); // channel or "prefix*" -> Set(fn)
  }

  // -- state ------------------------------------------------------------------------------

  /** @returns {ConnectionState} */
  get state() { return this._state; }

  /** The last `auth` result ({user_id, role, expires_at, blocked}), or null before the first. */
  get session() { return this._session; }

  /** The token in use (also what REST calls should carry). */
  get token() { return this._token; }

  /** The channels held (subscribed now, or again after the next reconnect). */
  get channels() { return [...this._channels.keys()]; }

  /** @param {string} channel */
  has(channel) { return this._channels.has(channel); }

  /** The last offset seen on a channel (what a resubscribe sends as `since`), or null. */
  offset(channel) { return this._channels.get(channel)?.offset ?? null; }

  // -- listeners ----------------------------------------------------------------------------

  /**
   * @param {ClientEventName} name
   * @param {(detail: any) => void} fn
   * @returns {() => void} removes the listener
   */
  on(name, fn) {
    let set = this._listeners.get(name);
    if (!set) this._listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  /** @param {ClientEventName} name @param {(detail: any) => void} fn */
  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
  }

  /** @param {ClientEventName} name @param {(detail: any) => void} fn @returns {() => void} */
  once(name, fn) {
    const off = this.on(name, (detail) => { off(); fn(detail); });
    return off;
  }

  /**
   * Events of one channel ("feed", "vybe:<id>"), or of every channel starting with a prefix
   * ("vybe:*"). Listening does not subscribe: subscribe() does.
   * @param {string} channel
   * @param {(msg: EventMessage) => void} fn
   * @returns {() => void} removes the listener
   */
  onChannel(channel, fn) {
    let set = this._channelListeners.get(channel);
    if (!set) this._channelListeners.set(channel, (set = new Set()));
    set.add(fn);
    return () => {
      const held = this._channelListeners.get(channel);
      // An empty set would stay for every vybe:<id> ever listened to, and every event scans them all.
      if (held && held.delete(fn) && !held.size) this._channelListeners.delete(channel);
    };
  }

  _emit(name, detail) {
    const set = this._listeners.get(name);
    if (!set || !set.size) return;
    for (const fn of [...set]) this._call(fn, detail, name);
  }

  _call(fn, detail, where) {
    try {
      fn(detail);
    } catch (error) {
      if (where !== "error" && this._listeners.get("error")?.size) {
        this._emit("error", { error, where: `listener:${where}` });
      } else {
        globalThis.console?.error?.("vybe-client: a listener threw", error);
      }
    }
  }

  _emitError(error, where) {
    if (this._listeners.get("error")?.size) this._emit("error", { error, where });
    else globalThis.console?.warn?.(`vybe-client (${where}):`, error);
  }

  _setState(state, detail = {}) {
    this._state = state;
    this._emit("status", { state, ...detail });
  }

  // -- lifecycle ----------------------------------------------------------------------------

  /** Open the socket (and keep one open: reconnects until close()). Returns the client. */
  connect() {
    if (this._closed) throw new Error("VybeClient: closed for good; make a new client");
    if (this._running) return this;
    this._running = true;
    if (this._stopError?.code === "auth_lost" && this._getToken) {  // signed out: not the refused token again
      this._needFreshToken = true;
      this._freshTokenTried = false;
    }
    this._stopError = null;
    this._attempt = 0;
    this._open();
    return this;
  }

  /** Resolves with the auth result once authenticated (at once if it is); rejects on close() or authLost. */
  ready() {
    if (this._authed) return Promise.resolve(this._session);
    if (this._closed) return Promise.reject(new CommandError("closed", "the client was closed"));
    return new Promise((resolve, reject) => this._readyWaiters.push({ resolve, reject }));
  }

  /** Stop for good: no reconnect, every pending command rejects with "closed". */
  close(code = 1000, reason = "client closed") {
    if (this._closed) return;
    this._closed = true;
    this._running = false;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    this._authed = false;
    if (ws) {
      try { ws.close(code, reason); } catch { /* already closing */ }
    }
    this._failEverything(new CommandError("closed", "the client was closed"));
    this._setState("closed", { code, reason });
  }

  _clearTimers() {
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._pumpTimer);
    clearTimeout(this._hbTimer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._openTimer);
    this._reconnectTimer = this._pumpTimer = this._hbTimer = this._refreshTimer = this._openTimer = null;
  }

  /** Reject every command, subscribe and ready() waiting (close() or authLost). */
  _failEverything(err) {
    for (const cmd of [...this._pending.values()]) this._settle(cmd, this._errorFor(cmd, err));
    this._queue = [];
    this._control = [];
    for (const entry of this._channels.values()) this._settleWaiters(entry, err);
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  _errorFor(cmd, err) {
    return new CommandError(err.code, err.message, err.retryAfter, cmd.id);
  }

  async _authToken() {
    const exp = this._token ? tokenExpiry(this._token) : null;
    const stale = exp !== null && exp * 1000 - Date.now() < 10000;
    if (this._getToken && (this._needFreshToken || !this._token || stale)) {
      const token = await this._getToken();
      if (typeof token !== "string" || !token) throw new TypeError("getToken() must return a token string");
      this._token = token;
      this._needFreshToken = false;
    }
    return this._token;
  }

  async _open() {
    if (!this._running) return;
    this._setState("connecting", { attempt: this._attempt });
    let token;
    const refused = this._refused;
    try {
      token = await this._authToken();
    } catch (error) {
      if (!this._running) return;
      this._emitError(error, "getToken");
      this._scheduleReconnect({ reason: "getToken failed" });
      return;
    }
    if (!this._running) return;
    if (refused && token === refused.token) {  // getToken gave back the token the server just refused
      this._signOut(refused.code, refused.reason);
      return;
    }
    let ws;
    try {
      ws = this._protocols ? new this._WS(this._url, this._protocols) : new this._WS(this._url);
    } catch (error) {
      this._emitError(error, "connect");
      this._scheduleReconnect({ reason: String(error?.message || error) });
      return;
    }
    this._ws = ws;
    this._authed = false;
    this._authError = null;
    this._goingAway = false;
    clearTimeout(this._openTimer);
    this._openTimer = setTimeout(() => {  // a handshake that never completes
      if (ws === this._ws && ws.readyState !== WS_OPEN) this._abandon(ws, "connect timeout");
    }, this._timeoutMs);
    ws.onopen = () => this._onOpen(ws, token);
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => this._onClose(ws, ev?.code ?? 1006, ev?.reason ?? "");
    ws.onerror = () => this._onSocketError(ws);
  }

  _onOpen(ws, token) {
    if (ws !== this._ws) return;
    clearTimeout(this._openTimer);
    if (ws.protocol === "vybe.msgpack") {
      this._emitError(new Error("the server chose MessagePack, which this client does not speak"), "connect");
      this._abandon(ws, "msgpack unsupported");
      return;
    }
    this._lastRx = Date.now();
    this._setState("open");
    this._sendAuth(ws, token);
  }

  _sendAuth(ws, token) {
    // Settled synchronously, in the frame's order: what follows the ack sees the session.
    const onSettle = (err, result) => {
      if (!err) {
        this._onAuthed(ws, result);
        return;
      }
      if (ws !== this._ws) return;
      if (RETRYABLE.has(err.code)) {  // PostgreSQL or Redis is down: the socket stays; auth again
        const delay = Math.max(200, (err.retryAfter ?? 1) * 1000);
        setTimeout(() => { if (ws === this._ws && !this._authed) this._sendAuth(ws, this._token); }, delay);
      } else if (err.code !== "disconnected" && err.code !== "timeout") {
        this._authError = err;  // auth_failed / token_expired: a 4003 close follows
      }
    };
    const cmd = this._newCommand({ type: "auth", token }, { kind: "auth", internal: true, onSettle });
    this._take();  // counted, never held back: nothing else can go before it
    this._transmit(ws, cmd);
  }

  _onAuthed(ws, result) {
    if (ws !== this._ws) return;
    this._authed = true;
    this._freshTokenTried = false;
    this._refused = null;
    this._attempt = 0;
    this._retryAfterMs = 0;
    this._session = result;
    const mine = result?.user_id ? `user:${result.user_id}` : null;
    for (const [channel, entry] of this._channels) {  // another user's personal channel (a new sign-in)
      if (entry.implicit && channel !== mine) this._channels.delete(channel);
    }
    let personal = mine ? this._channels.get(mine) : null;
    if (mine && !personal) {
      personal = this._newEntry(mine);
      personal.implicit = true;
      this._channels.set(mine, personal);
    }
    this._setState("authed", { userId: result?.user_id });
    this._emit("auth", { result, refreshed: false });
    if (ws !== this._ws) return;  // a listener closed the client
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) w.resolve(result);
    for (const entry of this._channels.values()) {
      if (entry.implicit) {
        // Held by the server since `auth`; with an offset, ask for what came while we were away. Without
        // one yet, a subscribe (answered like the first) names its resume point, so a reconnect before its
        // first event (a new user's first reaction or moderation outcome) still misses nothing.
        this._subscribeNow(entry);
      } else {
        this._subscribeNow(entry);
      }
    }
    this._armHeartbeat();
    this._pump();
  }

  _onSocketError(ws) {
    if (ws !== this._ws) return;
    if (ws.readyState === 0) {
      // Still CONNECTING: the handshake failed (refused, unreachable). A close event should follow,
      // but some implementations (Node 20's) never send one: do not wait for it.
      this._abandon(ws, "connection failed", 1006);
      return;
    }
    // Otherwise a close event follows (with its code); should it never come, drop the socket.
    setTimeout(() => { if (ws === this._ws && ws.readyState !== WS_OPEN) this._abandon(ws, "socket error", 1006); }, 1000);
  }

  _onMessage(ws, ev) {
    if (ws !== this._ws) return;
    this._lastRx = Date.now();
    const data = ev?.data;
    if (typeof data !== "string") {
      this._emitError(new Error("a binary frame: this client speaks the JSON protocol only"), "message");
      return;
    }
    let messages;
    try {
      messages = JSON.parse(data);
    } catch (error) {
      this._emitError(error, "message");
      return;
    }
    if (!Array.isArray(messages)) messages = [messages];
    for (const msg of messages) {
      if (ws !== this._ws) return;  // a handler closed it
      if (!msg || typeof msg !== "object") continue;
      try {
        this._handle(msg);
      } catch (error) {
        this._emitError(error, "message");
      }
    }
  }

  _handle(msg) {
    switch (msg.type) {
      case "ack": {
        const cmd = this._pending.get(msg.id);
        if (cmd) this._settle(cmd, null, msg.result ?? {});
        return;
      }
      case "error":
        this._onError(msg);
        return;
      case "event":
        this._onEvent(msg);
        return;
      case "notice":
        this._onNotice(msg);
        return;
      default:
    }
  }

  _onError(msg) {
    let cmd = msg.id != null && msg.id !== "" ? this._pending.get(msg.id) : null;
    if (!cmd && (msg.id === null || msg.id === undefined) && msg.code === "frame_too_large") {
      cmd = this._oldestLargeInFlight();
    }
    const err = new CommandError(msg.code, msg.message, msg.retry_after ?? null, cmd ? cmd.id : msg.id ?? null);
    if (msg.code === "unavailable" && msg.retry_after) {
      this._retryAfterMs = Math.max(this._retryAfterMs, msg.retry_after * 1000);
    }
    if (!cmd) {
      this._emitError(err, "server");
      return;
    }
    // Never sooner than retry_after, growing (1x, 2x, 4x...) and spread out (refusals come in bursts): jitter
    // in [1, 1.5). The Python SDK waits the same (vybe_client.client.retry_delay).
    const delay = Math.max(100, (msg.retry_after ?? 0.5) * 1000) * 2 ** cmd.retries * (1 + Math.random() / 2);
    // A caller's command whose retry would go after the caller stops waiting gets the refusal now: it says what
    // happened (nothing was applied), where a timeout would not. The channel commands go on regardless.
    const inTime = cmd.internal || Date.now() + delay + ANSWER_ALLOWANCE_MS < cmd.deadline;
    // At most `retries` in all, of which one after `internal` (a fault of the server, not a busy one), as in Python.
    const again = cmd.retries < this._retries && (msg.code !== "internal" || !cmd.internalRetries);
    if (RETRYABLE.has(msg.code) && cmd.kind !== "auth" && again && inTime) {
      cmd.retries += 1;  // the same id: a write that did land is answered from its first result
      if (msg.code === "internal") cmd.internalRetries = 1;
      cmd.sentOn = null;
      if (msg.code === "rate_limited" && this._rate) this._bucket.tokens = Math.min(this._bucket.tokens, 0);
      cmd.retryTimer = setTimeout(() => {
        cmd.retryTimer = null;
        if (this._pending.get(cmd.id) !== cmd) return;
        if (cmd.internal) this._control.unshift(cmd);
        else this._queue.unshift(cmd);
        this._pump();
      }, delay);
      return;
    }
    this._settle(cmd, err);
  }

  /** The server refuses an oversized frame before reading its id; it answers frames in order. */
  _oldestLargeInFlight() {
    let best = null;
    for (const cmd of this._pending.values()) {
      if (cmd.sentOn === this._ws && cmd.bytes > SOFT_FRAME_FLOOR && (!best || cmd.seq < best.seq)) best = cmd;
    }
    return best;
  }

  _onEvent(msg) {
    if (typeof msg.event === "string" && msg.event.endsWith(".digest") && Array.isArray(msg.data?.items)) {
      // A digest channel (delivery = "digest"): its newest items arrive as the events they are;
      // `digest` then says how many arrived in all (`skipped`: not carried, refetch to see them).
      for (const item of msg.data.items) this._onEvent(item);
      const entry = this._channels.get(msg.channel);
      if (entry && msg.offset != null) entry.offset = String(msg.offset);
      const count = Number(msg.data.count) || 0;
      this._emit("digest", { channel: msg.channel, count, skipped: Math.max(0, count - msg.data.items.length),
                             offset: msg.offset ?? null });
      return;
    }
    const entry = this._channels.get(msg.channel);
    if (entry && msg.offset != null) {
      const offset = String(msg.offset);
      if (entry.seen.has(offset)) return;  // a re-sync sent it again
      entry.seen.add(offset);
      entry.order.push(offset);
      if (entry.order.length > SEEN_PER_CHANNEL) entry.seen.delete(entry.order.shift());
      entry.offset = offset;
    }
    if (msg.event === "subscriptions.revoked" && entry?.implicit && Array.isArray(msg.data?.channels)) {
      // The app's backend dropped these subscriptions (server API): no longer held here either, so a reconnect
      // does not subscribe them again and subscribe() asks the server anew.
      for (const name of msg.data.channels) {
        const held = this._channels.get(name);
        if (typeof name !== "string" || !held || held.implicit) continue;
        // As unsubscribe(): a subscribe answered after the revoke (a reconnect's, replayed offline) is undone.
        this.unsubscribe(name).catch(() => {});
      }
    }
    this._emit("event", msg);
    const exact = this._channelListeners.get(msg.channel);
    if (exact) for (const fn of [...exact]) this._call(fn, msg, "channel");
    for (const [pattern, set] of this._channelListeners) {
      if (pattern.endsWith("*") && msg.channel.startsWith(pattern.slice(0, -1))) {
        for (const fn of [...set]) this._call(fn, msg, "channel");
      }
    }
  }

  _onNotice(msg) {
    this._emit("notice", msg);
    if (msg.code === "token_expiring") {
      if (this._getToken) this._autoRefresh();
    } else if (msg.code === "gap") {
      this._emit("gap", { channel: msg.data?.channel ?? null, message: msg.message, data: msg.data });
    } else if (msg.code === "going_away") {
      this._goingAway = true;  // a 1001 close follows: reconnect at once
    }
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    const wasAuthed = this._authed;
    const prompt = wasAuthed && (this._goingAway || code === 1001);  // a draining node: go elsewhere now
    this._ws = null;
    this._authed = false;
    clearTimeout(this._pumpTimer);
    clearTimeout(this._hbTimer);
    clearTimeout(this._openTimer);
    this._pumpTimer = this._hbTimer = this._openTimer = null;
    for (const entry of this._channels.values()) {
      if (entry.active) entry.resume = true;  // subscribed before: say whether the resubscribe resumed
      entry.active = false;
      entry.inflight = null;
    }
    // This socket's own commands die with it (subscriptions are redone from the map); user
    // commands sent on it go again, first and in their order, with the same id.
    const again = [];
    for (const cmd of [...this._pending.values()]) {
      if (cmd.internal) {
        this._settle(cmd, new CommandError("disconnected", "the connection dropped", null, cmd.id));
      } else if (cmd.sentOn === ws) {
        cmd.sentOn = null;
        again.push(cmd);
      }
    }
    again.sort((a, b) => a.seq - b.seq);
    this._control = [];
    this._queue = again.concat(this._queue.filter((c) => !again.includes(c)));
    if (!this._running) return;

    if (AUTH_LOST.has(code)) {
      if (this._getToken && !this._freshTokenTried) {  // ask for a fresh token once per refusal streak
        this._freshTokenTried = true;                 // (reset by a good auth), as the Python client does;
        this._needFreshToken = true;                  // the same token again is a sign-out (see _open)
        this._refused = { token: this._token, code, reason };
        this._scheduleReconnect({ code, reason, prompt: true });
        return;
      }
      this._signOut(code, reason);
      return;
    }
    if (code === 1009) {
      this._running = false;
      this._clearTimers();
      const err = new CommandError("frame_too_large", "the server closed the socket: a frame over 1 MiB");
      this._stopError = err;
      this._failEverything(err);
      this._setState("closed", { code, reason });
      this._emitError(err, "close");
      return;
    }
    this._scheduleReconnect({ code, reason, prompt });
  }

  /** Stop for good after the server refused the user (4003, 4004, 4010): until connect() or refreshToken(). */
  _signOut(code, reason) {
    this._running = false;
    this._refused = null;
    this._clearTimers();
    const why = { 4004: "the token expired", 4010: "your app's backend disconnected you" }[code];
    const err = new CommandError("auth_lost", why || "the token was refused");
    this._stopError = err;
    this._failEverything(err);
    this._setState("closed", { code, reason });
    this._emit("authLost", { code, reason, error: this._authError });
  }

  /** Give up on a socket that does not answer: treat it as closed now, without waiting for it. */
  _abandon(ws, reason, code = 4000) {
    if (ws !== this._ws) return;
    this._onClose(ws, code, reason);  // first: the close() below may dispatch events synchronously
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(4000, reason); } catch { /* already closed */ }
  }

  _scheduleReconnect({ code, reason, prompt = false }) {
    clearTimeout(this._reconnectTimer);
    let delay;
    if (prompt) {
      delay = 50 + Math.random() * 250;  // at once (jittered: not every client of a node in the same ms)
      this._attempt = 0;
    } else {
      const cap = Math.min(this._backoff.maxMs, this._backoff.minMs * 2 ** Math.min(this._attempt, 30));
      delay = Math.random() * cap;  // full jitter
    }
    if (code === 4029) delay = Math.max(delay, Math.min(5000, this._backoff.maxMs));  // flooding: pause
    if (this._retryAfterMs) delay = Math.max(delay, this._retryAfterMs);
    this._retryAfterMs = 0;
    this._goingAway = false;
    this._attempt += 1;
    const detail = { delayMs: Math.round(delay), attempt: this._attempt };
    if (code !== undefined) detail.code = code;
    if (reason) detail.reason = reason;
    this._setState("reconnecting", detail);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, delay);
  }

  // -- heartbeat and token refresh ------------------------------------------------------------

  _armHeartbeat() {
    clearTimeout(this._hbTimer);
    this._hbTimer = null;
    if (!this._heartbeatMs || !this._authed) return;
    const idle = Date.now() - this._lastRx;
    this._hbTimer = setTimeout(() => this._heartbeat(), Math.max(0, this._heartbeatMs - idle));
  }

  _heartbeat() {
    this._hbTimer = null;
    const ws = this._ws;
    if (!ws || !this._authed) return;
    if (Date.now() - this._lastRx < this._heartbeatMs) {
      this._armHeartbeat();
      return;
    }
    const cmd = this._newCommand({ type: "ping" }, { kind: "ping", internal: true,
                                                      timeoutMs: Math.min(this._timeoutMs, this._heartbeatMs) });
    this._control.push(cmd);
    this._pump();
    // A timeout of a ping sent drops the socket (see _expire; the next auth arms the heartbeat again), and so
    // does one never sent (the socket is stuck); a ping refused (rate limited) leaves it: keep watching it.
    cmd.promise.then(() => this._armHeartbeat(), (err) => {
      if (this._ws !== ws) return;
      if (err.code === "timeout") this._abandon(ws, "no answer to ping");  // unsent: the socket is stuck
      else this._armHeartbeat();  // refused (rate limited): keep watching this socket
    });
  }

  _autoRefresh() {
    if (this._refreshTimer || this._refreshing) return;
    // At most one refresh a second: a getToken() handing out short tokens must not loop.
    const wait = Math.max(0, this._lastRefreshAt + 1000 - Date.now());
    this._refreshTimer = setTimeout(async () => {
      this._refreshTimer = null;
      this._refreshing = true;
      this._lastRefreshAt = Date.now();
      try {
        const token = await this._getToken();
        if (this._running) await this.refreshToken(token);
      } catch (error) {
        if (this._running) this._emitError(error, "refresh");
      } finally {
        this._refreshing = false;
      }
    }, wait);
  }

  /**
   * Use a fresh token for the same user: sent as `auth` on the open socket (the session goes on),
   * else kept for the next connect (after authLost, this reconnects).
   * @param {string} token
   * @returns {Promise<AuthResult>}
   */
  refreshToken(token) {
    if (typeof token !== "string" || !token) return Promise.reject(new TypeError("refreshToken(token): a token string"));
    if (this._closed) return Promise.reject(new CommandError("closed", "the client was closed"));
    const previous = this._token;
    this._token = token;
    this._needFreshToken = false;
    if (this._authed && this._ws) {
      const cmd = this._newCommand({ type: "auth", token }, { kind: "reauth", internal: true });
      this._control.push(cmd);
      this._pump();
      return cmd.promise.then(
        (result) => {
          this._session = result;
          this._emit("auth", { result, refreshed: true });
          return result;
        },
        (err) => {
          if (err.code === "disconnected" || err.code === "timeout") return this.ready();  // next socket: new token
          if (this._token === token) this._token = previous;  // refused: the session goes on with the old one
          throw err;
        },
      );
    }
    if (!this._running) this.connect();  // after authLost: sign in again with it
    return this.ready();
  }

  // -- commands -------------------------------------------------------------------------------

  /** A command; `onSettle(err, result)`, when given, is called synchronously instead of a promise. */
  _newCommand(body, { kind, internal = false, timeoutMs, id, onSettle } = {}) {
    const frame = { ...body, id: id || newId(body.type) };
    const text = JSON.stringify(frame);
    const bytes = text.length * 3 > SOFT_FRAME_FLOOR ? utf8Length(text) : text.length;
    const cmd = { id: frame.id, frame, text, bytes, kind, internal, retries: 0, internalRetries: 0, sentOn: null,
                  seq: 0, timer: null, retryTimer: null, resolve: null, reject: null, promise: null };
    if (onSettle) {
      cmd.resolve = (result) => onSettle(null, result);
      cmd.reject = (err) => onSettle(err);
    } else {
      cmd.promise = new Promise((resolve, reject) => { cmd.resolve = resolve; cmd.reject = reject; });
    }
    if (bytes > this._maxFrameBytes) {
      cmd.reject(new CommandError("frame_too_large", `a frame of ${bytes} bytes (the limit is ${this._maxFrameBytes})`,
                                  null, cmd.id));
      return cmd;
    }
    const ms = timeoutMs ?? this._timeoutMs;
    cmd.deadline = Date.now() + ms;  // a caller's command is not retried past it: the refusal is its answer
    cmd.timer = setTimeout(() => this._expire(cmd), ms);
    this._pending.set(cmd.id, cmd);
    return cmd;
  }

  _expire(cmd) {
    if (this._pending.get(cmd.id) !== cmd) return;
    const ws = cmd.sentOn;
    this._settle(cmd, new CommandError("timeout", "no answer from the server", null, cmd.id));
    // One of this socket's own commands unanswered: the socket is stalled. Drop it, reconnect.
    if (cmd.internal && ws && ws === this._ws) this._abandon(ws, "no answer");
  }

  _settle(cmd, err, result) {
    if (this._pending.get(cmd.id) === cmd) this._pending.delete(cmd.id);
    clearTimeout(cmd.timer);
    clearTimeout(cmd.retryTimer);
    try {
      if (err) cmd.reject(err);
      else cmd.resolve(result);
    } catch (error) {
      this._emitError(error, "internal");
    }
  }

  /**
   * Send any command: resolves with the ack's `result`, rejects with a CommandError. Issued while
   * offline, it waits for the next authenticated socket; unanswered when a socket drops, it goes
   * again with the same id (writes are idempotent by id).
   * @param {string} type
   * @param {Object} [fields]  the command's fields, as docs/protocol.md spells them
   * @param {{timeoutMs?: number, id?: string}} [opts]  id: your own idempotency key (at most 64 characters)
   * @returns {Promise<any>}
   */
  send(type, fields = {}, opts = {}) {
    if (typeof type !== "string" || !type) return Promise.reject(new TypeError("send(type, fields): a type string"));
    if (this._closed) return Promise.reject(new CommandError("closed", "the client was closed"));
    if (!this._running && this._stopError) {  // after authLost (or a 1009): until connect() / refreshToken()
      return Promise.reject(new CommandError(this._stopError.code, this._stopError.message));
    }
    const ownId = opts.id ?? fields.id;
    if (ownId && this._pending.has(ownId)) {  // its answer would settle only one of them: refuse, as Python does
      return Promise.reject(new CommandError("duplicate_id", `a command with id ${ownId} is in flight`, null, ownId));
    }
    if (ownId && (typeof ownId !== "string" || ownId.length > 64)) {  // the server would answer with id: null
      return Promise.reject(new CommandError("invalid", "a command id is a string of at most 64 characters"));
    }
    const cmd = this._newCommand({ ...fields, type }, { kind: "user", timeoutMs: opts.timeoutMs, id: ownId });
    if (this._pending.get(cmd.id) === cmd) {
      this._queue.push(cmd);
      this._pump();
    }
    return cmd.promise;
  }

  _take() {
    if (!this._rate) return true;
    const now = Date.now();
    const b = this._bucket;
    b.tokens = Math.min(this._rate.burst, b.tokens + ((now - b.last) / 1000) * this._rate.perSecond);
    b.last = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    return false;
  }

  _pump() {
    clearTimeout(this._pumpTimer);
    this._pumpTimer = null;
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN || !this._authed) return;
    while (this._control.length || this._queue.length) {
      const list = this._control.length ? this._control : this._queue;
      const cmd = list[0];
      if (this._pending.get(cmd.id) !== cmd || cmd.sentOn) {  // settled (timed out) while queued
        list.shift();
        continue;
      }
      if (!this._take()) {
        const wait = Math.ceil(((1 - this._bucket.tokens) * 1000) / this._rate.perSecond);
        this._pumpTimer = setTimeout(() => this._pump(), Math.max(5, wait));
        return;
      }
      list.shift();
      this._transmit(ws, cmd);
    }
  }

  _transmit(ws, cmd) {
    cmd.sentOn = ws;
    cmd.seq = ++this._sendSeq;
    try {
      ws.send(cmd.text);
    } catch (error) {
      // Closing under us: the close handler puts user commands back in the queue.
      this._emitError(error, "send");
    }
  }

  // -- channels ---------------------------------------------------------------------------------

  _newEntry(channel) {
    return { channel, offset: null, seen: new Set(), order: [], active: false, inflight: null,
             again: false, resume: false, implicit: false, last: null, waiters: [] };
  }

  _wait(entry) {
    return new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        entry.waiters = entry.waiters.filter((x) => x !== w);
        reject(new CommandError("timeout", "not subscribed in time (the channel stays held)"));
      }, this._timeoutMs);
      entry.waiters.push(w);
    });
  }

  _settleWaiters(entry, err, result) {
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const w of waiters) {
      clearTimeout(w.timer);
      if (err) w.reject(err);
      else w.resolve(result);
    }
  }

  /**
   * Hold a channel: subscribed now (or once connected), and again after every reconnect with
   * `since` = the last offset seen. Resolves with the ack's result. Called again for a channel
   * held, it resolves with the last ack and sends nothing, unless `since` is given (then the
   * events after that offset are sent again). A refusal (forbidden, unknown_channel, not_found,
   * ...) rejects, emits "subscribeError" and lets the channel go; a timeout rejects but keeps it.
   * @param {string} channel
   * @param {{since?: string}} [opts]
   * @returns {Promise<SubscribeResult>}
   */
  subscribe(channel, { since } = {}) {
    if (typeof channel !== "string" || !channel) return Promise.reject(new TypeError("subscribe(channel): a channel name"));
    if (this._closed) return Promise.reject(new CommandError("closed", "the client was closed"));
    let entry = this._channels.get(channel);
    if (entry && !since) {
      if (entry.active && !entry.inflight && entry.last) return Promise.resolve(entry.last);
      const p = this._wait(entry);
      if (this._authed && !entry.inflight) this._subscribeNow(entry);
      return p;
    }
    if (!entry) {
      entry = this._newEntry(channel);
      this._channels.set(channel, entry);
    }
    if (since) {
      entry.offset = String(since);  // resume from here (now and after a reconnect, until an event moves it)
      entry.seen.clear();  // what you ask for again is delivered again
      entry.order = [];
    }
    const p = this._wait(entry);
    if (this._authed) {
      if (entry.inflight) entry.again = true;
      else this._subscribeNow(entry);
    }
    return p;
  }

  /**
   * Subscribe again from the last offset seen (after a `gap`, or to re-sync): emits recovered /
   * unrecovered like a resume.
   * @param {string} channel
   * @returns {Promise<SubscribeResult>}
   */
  resync(channel) {
    const entry = this._channels.get(channel);
    if (!entry) return this.subscribe(channel);
    if (this._closed) return Promise.reject(new CommandError("closed", "the client was closed"));
    const p = this._wait(entry);
    if (this._authed) {  // events seen stay seen: where the replay overlaps them, they are dropped
      if (entry.inflight) entry.again = true;
      else this._subscribeNow(entry);
    }
    return p;
  }

  /**
   * Let a channel go (no resubscribe after reconnects). Your own `user:` channel cannot be let go.
   * @param {string} channel
   * @returns {Promise<{channel: string}>}
   */
  unsubscribe(channel) {
    const entry = this._channels.get(channel);
    if (!entry) return Promise.resolve({ channel });
    if (entry.implicit) {
      return Promise.reject(new CommandError("forbidden", "your own user: channel is held while you are signed in"));
    }
    this._channels.delete(channel);
    this._settleWaiters(entry, new CommandError("unsubscribed", "unsubscribed before the subscribe was answered"));
    if (!this._authed || !(entry.active || entry.inflight)) return Promise.resolve({ channel });
    const cmd = this._newCommand({ type: "unsubscribe", channel }, { kind: "unsub", internal: true });
    this._control.push(cmd);
    this._pump();
    return cmd.promise.catch((err) => {
      if (err.code === "not_subscribed" || err.code === "disconnected") return { channel };
      throw err;
    });
  }

  _subscribeNow(entry) {
    const frame = { type: "subscribe", channel: entry.channel };
    const since = entry.offset;
    if (since) frame.since = since;
    entry.again = false;
    const resumeAttempt = entry.resume;
    entry.resume = false;
    // Settled synchronously: "subscribed" / "recovered" come before the replayed events that
    // follow the ack in the same frame.
    let cmd = null;
    const onSettle = (err, result) => {
      if (entry.inflight === cmd) entry.inflight = null;
      if (err) {
        this._subscribeFailed(entry, err, resumeAttempt);
        return;
      }
      if (this._channels.get(entry.channel) !== entry) return;  // unsubscribed meanwhile
      entry.active = true;
      entry.last = result;
      // Without `since` the ack names the channel's newest offset as we joined: a reconnect before
      // the first event resumes from there (an event already seen keeps its newer offset).
      if (!since && typeof result?.offset === "string" && !entry.offset) entry.offset = result.offset;
      // History no longer reached `since`: resume from the new point next time (not the lost one again).
      if (since && result?.recovered === false && typeof result?.offset === "string" && entry.offset === since) {
        entry.offset = result.offset;
      }
      this._emit("subscribed", { channel: entry.channel, result, resumed: Boolean(since), since: since || null });
      if (since) {
        if (result?.recovered === true) this._emit("recovered", { channel: entry.channel, missed: result.missed ?? 0, since });
        else this._emit("unrecovered", { channel: entry.channel, since, result });
      } else if (resumeAttempt) {
        this._emit("unrecovered", { channel: entry.channel, since: null, result });
      }
      if (entry.again && this._authed) {
        this._subscribeNow(entry);  // a `since` asked for meanwhile: its answer settles the waiters
        return;
      }
      this._settleWaiters(entry, null, result);
    };
    cmd = this._newCommand(frame, { kind: "sub", internal: true, onSettle });
    if (this._pending.get(cmd.id) !== cmd) return;  // refused at once (a name over maxFrameBytes)
    entry.inflight = cmd;
    this._control.push(cmd);
    this._pump();
  }

  _subscribeFailed(entry, err, resumeAttempt) {
    if (err.code === "disconnected" || err.code === "timeout") {
      if (resumeAttempt) entry.resume = true;
      // A timeout that dropped the socket, or a disconnect: subscribed again after the reconnect. A timeout on a
      // socket that stays (the subscribe waited out retries of `unavailable` and was never answered): again now,
      // or the channel would stay held but unsubscribed, with nothing to say so.
      // Checked after _expire has dropped a stalled socket (it does so right after settling the command).
      if (err.code === "timeout") {
        const ws = this._ws;
        queueMicrotask(() => {
          if (this._running && this._authed && this._ws === ws && this._channels.get(entry.channel) === entry
              && !entry.active && !entry.inflight) this._subscribeNow(entry);
        });
      }
      return;
    }
    if (!this._running) return;  // close() or authLost: the channel stays held (for a sign-in again)
    if (this._channels.get(entry.channel) !== entry) return;
    if (entry.implicit) {
      entry.active = true;  // the server still holds it; only the catch-up was refused
    } else {
      this._channels.delete(entry.channel);
    }
    this._settleWaiters(entry, err);
    this._emit("subscribeError", { channel: entry.channel, error: err });
  }


  // -- the protocol's commands -----------------------------------------------------------------
  // Required fields are arguments; `fields` carries the optional ones, spelled as the protocol
  // spells them (snake_case), and `opts` is send()'s ({timeoutMs, id}).

  /** post_vybe: `fields` vybe_type, privacy_level, is_anonymous, looproom_id, loopchain_id. */
  postVybe(content, fields = {}, opts) { return this.send("post_vybe", { ...fields, content }, opts); }

  /** comment: `fields` parent_id, is_anonymous. */
  comment(vybeId, content, fields = {}, opts) { return this.send("comment", { ...fields, vybe_id: vybeId, content }, opts); }

  /** react: `fields` target_type (SHARED_VYBE by default on the server, COMMENT, LOOPROOM). */
  react(targetId, reaction, fields = {}, opts) { return this.send("react", { ...fields, target_id: targetId, reaction }, opts); }

  /** unreact: as react(). */
  unreact(targetId, reaction, fields = {}, opts) { return this.send("unreact", { ...fields, target_id: targetId, reaction }, opts); }

  /** share a vybe. */
  share(vybeId, fields = {}, opts) { return this.send("share", { ...fields, vybe_id: vybeId }, opts); }

  /** report (SHARED_VYBE, COMMENT or USER): `fields` description. */
  report(targetType, targetId, reportType, fields = {}, opts) {
    return this.send("report", { ...fields, target_type: targetType, target_id: targetId, report_type: reportType }, opts);
  }

  /** block a user: resolves with {blocked: [...]}, your whole block list. */
  block(userId, opts) { return this.send("block", { user_id: userId }, opts); }

  /** unblock a user: resolves with {blocked: [...]}. */
  unblock(userId, opts) { return this.send("unblock", { user_id: userId }, opts); }

  /** appeal a moderation decision on your content. */
  appeal(targetType, targetId, statement, fields = {}, opts) {
    return this.send("appeal", { ...fields, target_type: targetType, target_id: targetId, statement }, opts);
  }

  /** claim a case (MODERATOR, ADMIN): `fields` release: true lets it go. */
  claim(caseId, version, fields = {}, opts) { return this.send("claim", { ...fields, case_id: caseId, version }, opts); }

  /** resolve a case: action remove, hide, restore, dismiss; `fields` note, message, labels. */
  resolve(caseId, version, action, fields = {}, opts) {
    return this.send("resolve", { ...fields, case_id: caseId, version, action }, opts);
  }

  /** reopen a resolved case. */
  reopen(caseId, version, fields = {}, opts) { return this.send("reopen", { ...fields, case_id: caseId, version }, opts); }

  /** ping: resolves with {time} (the server's clock). */
  ping(opts) { return this.send("ping", {}, opts); }

  /**
   * publish to a channel of a namespace the server allows it on (e.g. "chat:room1").
   * @param {string} channel
   * @param {any} data
   * @returns {Promise<PublishResult>}
   */
  publish(channel, data, fields = {}, opts) { return this.send("publish", { ...fields, channel, data }, opts); }
}

export default VybeClient;
