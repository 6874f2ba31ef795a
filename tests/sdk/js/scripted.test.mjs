// What a live gateway cannot be made to do on demand, against a scripted server
// (fake-server.mjs): `gap`, `unavailable` on auth and on a command (retry_after honoured,
// same id), `internal` retried, a re-sync's duplicate event dropped, going_away answered at
// once, 1009 not reconnected, 4010 signed out unless a fresh token comes, subscriptions.revoked,
// a duplicate own id. No gateway needed.

import assert from "node:assert/strict";
import { test } from "node:test";

import { authOk, fakeGateway } from "./fake-server.mjs";
import { VybeClient, collect, mint, next, sleep } from "./support.mjs";

const token = mint("fake-user", { secret: "s" });

function fakeClient(url, options = {}) {
  return new VybeClient({ url, token, backoff: { minMs: 2000, maxMs: 4000 }, commandTimeoutMs: 3000, ...options });
}

test("gap notice, and a re-sync's duplicate event is delivered once", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
    if (f.type === "subscribe") {
      conn.ack(f, { channel: f.channel, recovered: f.since ? true : null, missed: f.since ? 1 : 0 });
      const ev = { type: "event", channel: "feed", offset: "1-1-1", event: "vybe.created", ts: 1, data: { n: 1 } };
      conn.send(ev);
      if (f.since) conn.send(ev, { ...ev, offset: "1-1-2", data: { n: 2 } });  // a replay overlapping the live one
    }
  });
  const c = fakeClient(server.url);
  try {
    const events = collect(c, "event");
    const gaps = collect(c, "gap");
    c.connect();
    await c.subscribe("feed");
    await sleep(50);
    assert.deepEqual(events.map((e) => e.data.n), [1]);
    const gap = next(c, "gap");
    server.conns[0].send({ type: "notice", code: "gap", message: "lost", data: { channel: "feed" } });
    assert.equal((await gap).channel, "feed");
    assert.equal(gaps.length, 1);
    const recovered = next(c, "recovered");
    await c.resync("feed");  // since = the last offset seen
    assert.equal(server.conns[0].frames.at(-1).since, "1-1-1");
    assert.equal((await recovered).since, "1-1-1");
    await sleep(50);
    assert.deepEqual(events.map((e) => e.data.n), [1, 2], "offset 1-1-1 once, then 1-1-2");
    assert.equal(c.offset("feed"), "1-1-2");
  } finally {
    c.close();
    server.close();
  }
});

test("unavailable on auth: auth again on the same socket after retry_after", async () => {
  let auths = 0;
  const server = await fakeGateway((conn, f) => {
    if (f.type !== "auth") return;
    auths += 1;
    if (auths === 1) conn.error(f, "unavailable", { retry_after: 0.3 });
    else authOk(conn, f);
  });
  const c = fakeClient(server.url);
  try {
    const t0 = Date.now();
    c.connect();
    await c.ready();
    assert.ok(Date.now() - t0 >= 280, `authenticated after ${Date.now() - t0} ms`);
    assert.equal(server.conns.length, 1, "the same socket");
    assert.equal(auths, 2);
  } finally {
    c.close();
    server.close();
  }
});

test("unavailable and internal answers: the command goes again with the same id; forbidden does not", async () => {
  const seen = new Map();
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") return authOk(conn, f);
    const n = (seen.get(f.id) || 0) + 1;
    seen.set(f.id, n);
    if (f.type === "post_vybe") {
      if (n === 1) conn.error(f, "unavailable", { retry_after: 0.2 });
      else if (n === 2) conn.error(f, "internal", { retry_after: 0.1 });
      else conn.ack(f, { id: "v1", content: f.content });
    }
    if (f.type === "block") conn.error(f, "forbidden");
  });
  const c = fakeClient(server.url);
  try {
    c.connect();
    const t0 = Date.now();
    const vybe = await c.postVybe("hello");
    assert.equal(vybe.id, "v1");
    // 0.2 s (the first answer's retry_after), then 2 x 0.1 s (the second's, doubled): never sooner than asked.
    assert.ok(Date.now() - t0 >= 390, "waited for retry_after, doubled on the second retry");
    const posts = server.conns[0].frames.filter((f) => f.type === "post_vybe");
    assert.equal(posts.length, 3);
    assert.equal(new Set(posts.map((f) => f.id)).size, 1, "one id for all three");
    await assert.rejects(c.block("x"), { code: "forbidden" });
    assert.equal(server.conns[0].frames.filter((f) => f.type === "block").length, 1);
  } finally {
    c.close();
    server.close();
  }
});

test("internal goes again once, after any other refusals; a second internal is the answer", async () => {
  let posts = 0;
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") return authOk(conn, f);
    if (f.type === "post_vybe") {
      posts += 1;
      if (posts === 1) conn.error(f, "unavailable", { retry_after: 0.05 });
      else conn.error(f, "internal", { retry_after: 0.05 });
    }
  });
  const c = fakeClient(server.url);
  try {
    c.connect();
    await c.ready();
    await assert.rejects(c.postVybe("hello"), { code: "internal" });
    assert.equal(posts, 3, "unavailable, internal (again once), internal (the answer)");
  } finally {
    c.close();
    server.close();
  }
});

test("a retry the caller would not wait for is not made: the refusal is the answer, not a timeout", async () => {
  let posts = 0;
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") return authOk(conn, f);
    if (f.type === "post_vybe") {
      posts += 1;
      conn.error(f, "unavailable", { retry_after: 0.4 });
    }
  });
  const c = fakeClient(server.url, { commandTimeoutMs: 2500 });
  try {
    c.connect();
    await c.ready();
    const t0 = Date.now();
    // Retries after 0.4 s and 0.8 s (each up to 1.5x) fit in 2.5 s; the third (1.6 s or more) would not.
    await assert.rejects(c.postVybe("hello"), (err) => err.code === "unavailable" && err.retryAfter === 0.4);
    assert.ok(Date.now() - t0 < 2500, `answered after ${Date.now() - t0} ms`);
    assert.equal(posts, 3);
  } finally {
    c.close();
    server.close();
  }
});

test("going_away then 1001: reconnect at once, not after the backoff", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
  });
  const c = fakeClient(server.url);  // backoff of 2 s or more
  try {
    const notices = collect(c, "notice");
    c.connect();
    await c.ready();
    const reconnecting = next(c, "status", (s) => s.state === "reconnecting");
    server.conns[0].send({ type: "notice", code: "going_away", message: "bye" });
    server.conns[0].close(1001, "server shutting down");
    const r = await reconnecting;
    assert.equal(r.code, 1001);
    assert.ok(r.delayMs < 400, `delay ${r.delayMs} ms`);
    await next(c, "status", (s) => s.state === "authed", 2000);
    assert.equal(server.conns.length, 2);
    assert.equal(notices[0].code, "going_away");
  } finally {
    c.close();
    server.close();
  }
});

test("close 1009: no reconnect, the client reports it", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
  });
  const c = fakeClient(server.url, { backoff: { minMs: 10, maxMs: 20 } });
  try {
    const errors = collect(c, "error");
    c.connect();
    await c.ready();
    const closed = next(c, "status", (s) => s.state === "closed");
    server.conns[0].close(1009, "frame too large");
    assert.equal((await closed).code, 1009);
    await sleep(200);
    assert.equal(server.conns.length, 1, "not reconnected");
    assert.equal(errors.at(-1)?.error?.code, "frame_too_large");
    await assert.rejects(c.ping(), { code: "frame_too_large" });
  } finally {
    c.close();
    server.close();
  }
});

test("token_expiring after every refresh: getToken() is asked at most once a second", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type !== "auth") return;
    authOk(conn, f);
    conn.send({ type: "notice", code: "token_expiring", message: "soon", data: { expires_at: 0 } });
  });
  let calls = 0;
  const c = fakeClient(server.url, { token: undefined, getToken: async () => { calls += 1; return token; } });
  try {
    const refreshed = collect(c, "auth");
    c.connect();
    await sleep(1600);
    assert.ok(calls >= 2 && calls <= 3, `getToken() called ${calls} times in 1.6 s`);
    assert.ok(refreshed.filter((a) => a.refreshed).length >= 1);
    assert.equal(server.conns.length, 1);
  } finally {
    c.close();
    server.close();
  }
});

test("close 4010 (the app's backend disconnected the user): a fresh token is asked once, then authLost", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
  });
  let calls = 0;
  const fresh = async () => { calls += 1; return mint("fake-user", { secret: "s", name: `n${calls}` }); };
  const c = fakeClient(server.url, { token: undefined, backoff: { minMs: 10, maxMs: 20 }, getToken: fresh });
  try {
    c.connect();
    await c.ready();
    assert.equal(calls, 1);
    const back = next(c, "auth");
    server.conns[0].close(4010, "disconnected");
    await back;  // the backend still mints a token for this user: signed in again, with a fresh one
    assert.equal(calls, 2);
    server.conns[1].close(4010, "disconnected");  // a good auth reset the once: asked again
    await next(c, "auth");
    assert.equal(calls, 3);
    // A getToken that hands back the refused token (a cache) signs out: the disconnect is not undone.
    const cached = fakeClient(server.url, { token: undefined, backoff: { minMs: 10, maxMs: 20 },
                                            getToken: async () => token });
    try {
      const out = next(cached, "authLost");
      cached.connect();
      await cached.ready();
      const before = server.conns.length;
      server.conns.at(-1).close(4010, "disconnected");
      assert.equal((await out).code, 4010);
      await sleep(100);
      assert.equal(server.conns.length, before, "not reconnected with the refused token");
    } finally {
      cached.close();
    }
    const noToken = new VybeClient({ url: server.url, token, backoff: { minMs: 10, maxMs: 20 } });
    try {
      const gone = next(noToken, "authLost");
      noToken.connect();
      await noToken.ready();
      server.conns.at(-1).close(4010, "disconnected");
      assert.equal((await gone).code, 4010, "without getToken: signed out, not reconnected with the same token");
      await sleep(100);
      await assert.rejects(noToken.ping(), { code: "auth_lost" });
    } finally {
      noToken.close();
    }
  } finally {
    c.close();
    server.close();
  }
});

test("subscriptions.revoked: the channels are no longer held, so no reconnect subscribes them again", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
    if (f.type === "subscribe") conn.ack(f, { channel: f.channel, offset: null });
  });
  const c = fakeClient(server.url, { backoff: { minMs: 10, maxMs: 20 } });
  try {
    c.connect();
    await c.ready();
    await c.subscribe("chat:m-1");
    await c.subscribe("feed");
    const told = next(c, "event", (e) => e.event === "subscriptions.revoked");
    server.conns[0].send({ type: "event", channel: "user:fake-user", offset: "1-1-1", event: "subscriptions.revoked",
                           ts: 1, data: { channels: ["chat:m-1"] } });
    await told;
    assert.deepEqual(c.channels.filter((ch) => !ch.startsWith("user:")), ["feed"]);
    const again = next(c, "auth");
    server.conns[0].close(1012, "restart");
    await again;
    await sleep(100);
    const resubscribed = server.conns[1].frames.filter((f) => f.type === "subscribe").map((f) => f.channel);
    assert.ok(resubscribed.includes("feed") && !resubscribed.includes("chat:m-1"), resubscribed.join(","));
  } finally {
    c.close();
    server.close();
  }
});

test("your own id while a command with it is in flight is refused (its answer would settle only one)", async () => {
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
    if (f.type === "post_vybe") setTimeout(() => conn.ack(f, { id: "v1" }), 100);
  });
  const c = fakeClient(server.url);
  try {
    c.connect();
    await c.ready();
    const first = c.send("post_vybe", { content: "a" }, { id: "mine-1" });
    await assert.rejects(c.send("post_vybe", { content: "b" }, { id: "mine-1" }), { code: "duplicate_id" });
    await assert.rejects(c.send("post_vybe", { content: "c" }, { id: "x".repeat(65) }), { code: "invalid" });
    assert.equal((await first).id, "v1");
    assert.equal(server.conns[0].frames.filter((f) => f.type === "post_vybe").length, 1);
  } finally {
    c.close();
    server.close();
  }
});

test("a subscribe that times out while waiting to retry `unavailable` is sent again, not left held unsubscribed", async () => {
  let subscribes = 0;
  const server = await fakeGateway((conn, f) => {
    if (f.type === "auth") authOk(conn, f);
    if (f.type === "subscribe") {
      subscribes += 1;
      if (subscribes <= 2) {
        conn.error(f, "unavailable", { retry_after: 0.6 });
      } else {
        conn.ack(f, { channel: f.channel, offset: null });
        conn.send({ type: "event", channel: f.channel, offset: "1-1-1", event: "vybe.created", ts: 1, data: { n: 1 } });
      }
    }
  });
  const c = fakeClient(server.url, { commandTimeoutMs: 700 });
  try {
    c.connect();
    await c.ready();
    const arrived = next(c, "event", (e) => e.channel === "feed", 4000);
    // The caller's wait ends at the command timeout ("a timeout rejects but keeps it"); the channel, held, must
    // still get subscribed on this socket (before, nothing sent it again until some later reconnect).
    await c.subscribe("feed").catch((err) => assert.equal(err.code, "timeout"));
    assert.equal((await arrived).data.n, 1);
    assert.ok(subscribes >= 3, `${subscribes} subscribes`);
    assert.equal(server.conns.length, 1, "on the same socket");
  } finally {
    c.close();
    server.close();
  }
});
