// The gateway socket: auth frame, commands with ids (promises resolved by ack/error),
// events with per-channel offsets, resume with `since` after a reconnect (capped,
// jittered backoff), and a client-side token bucket under the server's rate limit.
//
// Server frames are always JSON arrays of messages: ack, error, event, notice.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const COMMAND_TIMEOUT_MS = 20000;
const RATE_PER_S = 15;      // the server allows 20/s with bursts of 40
const RATE_BURST = 30;
const NO_RECONNECT = new Set([4003, 4004, 1009]);  // refused token, expired token, frame too large

export class CommandError extends Error {
  constructor(code, message, retryAfter) {
    super(message || code);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let counter = 0;
function newId(prefix) {
  counter += 1;
  const rand = crypto.getRandomValues(new Uint32Array(2));
  return `${prefix}-${Date.now().toString(36)}-${rand[0].toString(36)}${rand[1].toString(36)}-${counter}`;
}

export class LiveSocket {
  /**
   * handlers: onEvent(msg), onNotice(msg), onStatus(state, detail), onSubscribed(channel, result),
   * onSubscribeError(channel, err), onAuthLost(code), onAuthed(result)
   */
  constructor(token, handlers = {}) {
    this.token = token;
    this.h = handlers;
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    this.ws = null;
    this.authed = false;
    this.stopped = false;
    this.attempt = 0;
    this.goingAway = false;
    this.channels = new Map();   // channel -> { offset, subscribed }
    this.pending = new Map();    // id -> { frame, resolve, reject, timer, kind }
    this.outbox = [];            // frames waiting for the socket or for rate tokens
    this.tokens = RATE_BURST;
    this.lastRefill = performance.now();
    this.pumpTimer = null;
    this.reconnectTimer = null;
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.ws?.close(1000, "bye");
  }

  /** Hold a channel: subscribed now if connected, and again (with `since`) after every reconnect. */
  subscribe(channel) {
    if (this.channels.has(channel)) return;
    this.channels.set(channel, { offset: null, subscribed: false });
    if (this.authed) this._subscribe(channel);
  }

  unsubscribe(channel) {
    const entry = this.channels.get(channel);
    if (!entry) return;
    this.channels.delete(channel);
    if (this.authed && entry.subscribed) {
      this._send({ type: "unsubscribe", channel }, "internal").catch(() => {});
    }
  }

  has(channel) {
    return this.channels.has(channel);
  }

  /** Send a command; resolves with the ack's result, rejects with a CommandError. Queued while offline. */
  command(type, fields = {}) {
    return this._send({ type, ...fields }, "user");
  }

  /** Renew the session on this socket with a fresh token for the same user. */
  reauth(token) {
    this.token = token;  // also what the next reconnect authenticates with
    return this._send({ type: "auth", token }, "auth");
  }

  // -- internals ---------------------------------------------------------------------

  _connect() {
    if (this.stopped) return;
    this._status("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.authed = false;
    ws.addEventListener("open", () => this._onOpen(ws));
    ws.addEventListener("message", (ev) => this._onMessage(ws, ev));
    ws.addEventListener("close", (ev) => this._onClose(ws, ev));
  }

  async _onOpen(ws) {
    if (ws !== this.ws) return;
    this.goingAway = false;
    const id = newId("auth");
    const frame = { type: "auth", id, token: this.token };
    const done = this._expect(id, frame, "auth");
    ws.send(JSON.stringify(frame));
    let result;
    try {
      result = await done;
    } catch (err) {
      // auth_failed / token_expired: the server closes with 4003 next.
      return;
    }
    if (ws !== this.ws) return;
    this.authed = true;
    this.attempt = 0;
    this._status("live");
    this.h.onAuthed?.(result);
    for (const channel of this.channels.keys()) this._subscribe(channel);
    this._pump();
  }

  _subscribe(channel) {
    const entry = this.channels.get(channel);
    const frame = { type: "subscribe", channel };
    if (entry.offset) frame.since = entry.offset;
    this._send(frame, "internal").then(
      (result) => {
        const current = this.channels.get(channel);
        if (current !== entry) return;  // unsubscribed meanwhile
        entry.subscribed = true;
        this.h.onSubscribed?.(channel, result, Boolean(frame.since));
      },
      (err) => {
        if (err.code === "disconnected") return;  // resubscribed on reconnect
        if (this.channels.get(channel) === entry) this.channels.delete(channel);
        this.h.onSubscribeError?.(channel, err);
      },
    );
  }

  _send(body, kind) {
    const frame = { ...body, id: body.id || newId(body.type) };
    const promise = this._expect(frame.id, frame, kind);
    this.outbox.push(frame);
    this._pump();
    return promise;
  }

  _expect(id, frame, kind) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.outbox = this.outbox.filter((f) => f !== frame);
        reject(new CommandError("timeout", "no answer from the server; try again"));
      }, COMMAND_TIMEOUT_MS);
      this.pending.set(id, { frame, resolve, reject, timer, kind, retries: 0 });
    });
  }

  _pump() {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.authed) return;
    const now = performance.now();
    this.tokens = Math.min(RATE_BURST, this.tokens + ((now - this.lastRefill) / 1000) * RATE_PER_S);
    this.lastRefill = now;
    while (this.outbox.length && this.tokens >= 1) {
      const frame = this.outbox.shift();
      if (!this.pending.has(frame.id)) continue;  // timed out while queued
      this.tokens -= 1;
      ws.send(JSON.stringify(frame));
    }
    if (this.outbox.length) {
      this.pumpTimer = setTimeout(() => this._pump(), Math.ceil(1000 / RATE_PER_S));
    }
  }

  _onMessage(ws, ev) {
    if (ws !== this.ws) return;
    let messages;
    try {
      messages = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!Array.isArray(messages)) messages = [messages];
    for (const msg of messages) {
      try {
        this._handle(msg);
      } catch (err) {
        console.error("vybe: handling", msg, err);
      }
    }
  }

  _handle(msg) {
    switch (msg.type) {
      case "ack": {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        p.resolve(msg.result ?? {});
        return;
      }
      case "error": {
        const p = msg.id ? this.pending.get(msg.id) : null;
        if (!p) {
          console.warn("vybe: server error", msg);
          return;
        }
        if (msg.code === "rate_limited" && p.retries < 5) {
          p.retries += 1;  // same id: writes are idempotent, so a retry is safe
          setTimeout(() => {
            if (this.pending.get(msg.id) === p) { this.outbox.push(p.frame); this._pump(); }
          }, Math.max(200, (msg.retry_after || 0.5) * 1000));
          return;
        }
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        p.reject(new CommandError(msg.code, msg.message, msg.retry_after));
        return;
      }
      case "event": {
        const entry = this.channels.get(msg.channel);
        if (entry && msg.offset) entry.offset = msg.offset;
        this.h.onEvent?.(msg);
        return;
      }
      case "notice": {
        if (msg.code === "going_away") this.goingAway = true;
        this.h.onNotice?.(msg);
        return;
      }
      default:
        return;
    }
  }

  _onClose(ws, ev) {
    if (ws !== this.ws) return;
    this.authed = false;
    for (const entry of this.channels.values()) entry.subscribed = false;
    // Writes in flight keep their promise and go again with the same id after the
    // reconnect (the id is the idempotency key); subscriptions are redone from the map.
    const again = [];
    for (const [id, p] of this.pending) {
      if (p.kind === "user") {
        again.push(p.frame);
      } else {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new CommandError("disconnected", "the connection dropped"));
      }
    }
    this.outbox = again.concat(this.outbox.filter((f) => !again.includes(f) && this.pending.has(f.id)));
    if (this.stopped) {
      this._status("offline");
      return;
    }
    if (NO_RECONNECT.has(ev.code)) {
      this.stopped = true;
      this._status("offline", ev.code === 1009 ? "message too large" : "signed out");
      this._rejectAll("signed_out");
      this.h.onAuthLost?.(ev.code);
      return;
    }
    this._scheduleReconnect();
  }

  _rejectAll(code) {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new CommandError(code, "not connected"));
      this.pending.delete(id);
    }
    this.outbox = [];
  }

  _scheduleReconnect() {
    clearTimeout(this.reconnectTimer);
    let delay;
    if (this.goingAway) {
      delay = 50 + Math.random() * 250;  // the node is draining: go to another at once
      this.goingAway = false;
    } else {
      const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      delay = cap / 2 + Math.random() * (cap / 2);  // "equal jitter"
    }
    this.attempt += 1;
    this._status("reconnecting", Math.round(delay / 1000));
    this.reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  _status(state, detail) {
    this.h.onStatus?.(state, detail);
  }
}

/** Render the connection state into the #conn pill. */
export function statusRenderer(el) {
  return (state, detail) => {
    el.dataset.state = state;
    el.textContent = {
      connecting: "Connecting…",
      live: "Live",
      reconnecting: detail ? `Reconnecting in ${detail}s…` : "Reconnecting…",
      offline: detail ? `Offline (${detail})` : "Offline",
    }[state] || state;
  };
}
