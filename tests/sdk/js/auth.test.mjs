// Tokens: in-band refresh on `token_expiring` (getToken), refreshToken() by the caller, and
// authLost on 4003 / 4004 with no reconnect until a new token. The gateways run with
// jwt_leeway_s=0 and a short token_warn_s (VYBE_TOKEN_WARN_S), so short tokens warn at once.

import assert from "node:assert/strict";
import { test } from "node:test";

import { NO_GATEWAY, TOKEN_WARN_S, client, collect, mint, next, sleep, uid } from "./support.mjs";

test("token_expiring: getToken() is called and the fresh token is sent on the same socket", { skip: NO_GATEWAY }, async () => {
  const me = uid("refresher");
  const ttl = TOKEN_WARN_S + 1;
  const issued = [];
  const getToken = async () => {
    const token = mint(me, { ttl: issued.length === 0 ? ttl : 3600 });
    issued.push(token);
    return token;
  };
  const c = client({ getToken });
  const statuses = collect(c, "status");
  const notices = collect(c, "notice");
  const refreshed = next(c, "auth", (d) => d.refreshed, (ttl + 2) * 1000);
  const started = Date.now();
  c.connect();
  const first = await c.ready();
  assert.equal(first.user_id, me);
  assert.equal(issued.length, 1, "getToken() gave the first token");
  assert.equal(c.token, issued[0]);
  const { result } = await refreshed;
  assert.equal(result.user_id, me);
  assert.ok(notices.some((n) => n.code === "token_expiring"), JSON.stringify(notices));
  assert.equal(issued.length, 2, "one refresh");
  assert.equal(c.token, issued[1]);
  assert.ok(result.expires_at > first.expires_at);
  // Past the first token's expiry, the same socket is still up.
  await sleep(Math.max(0, started + (ttl + 1) * 1000 - Date.now()));
  assert.equal(typeof (await c.ping()).time, "number");
  assert.equal(c.state, "authed");
  assert.deepEqual(statuses.map((s) => s.state), ["connecting", "open", "authed"], "never reconnected");
});

test("refreshToken() by the caller renews in band; without it the socket closes 4004 and authLost stops it",
  { skip: NO_GATEWAY }, async () => {
    const me = uid("paster");
    const c = client({ token: mint(me, { ttl: TOKEN_WARN_S + 1 }) });
    // Listening before connect(): a token inside its warning window is warned right after the ack.
    const warned = next(c, "notice", (n) => n.code === "token_expiring", 4000);
    c.connect();
    await c.ready();
    await warned;
    const renewed = await c.refreshToken(mint(me));
    assert.equal(renewed.user_id, me);
    await assert.rejects(c.refreshToken(mint(uid("someone-else"))), { code: "auth_failed" });
    assert.equal(c.state, "authed", "a refused refresh leaves the session as it was");

    // Now one that is let expire.
    const lapsed = uid("lapsed");
    const d = client({ token: mint(lapsed, { ttl: 2 }) });
    const statuses = collect(d, "status");
    const lost = next(d, "authLost", () => true, 5000);
    d.connect();
    await d.ready();
    const pending = d.ready();  // resolved: authed already
    assert.equal((await pending).user_id, lapsed);
    const detail = await lost;
    assert.equal(detail.code, 4004);
    assert.equal(d.state, "closed");
    await assert.rejects(d.ping(), { code: "auth_lost" });
    await sleep(600);
    assert.equal(d.state, "closed", "no reconnect without a new token");
    assert.ok(!statuses.some((s) => s.state === "reconnecting"), JSON.stringify(statuses));
    // A new token brings it back.
    const back = await d.refreshToken(mint(lapsed));
    assert.equal(back.user_id, lapsed);
    assert.equal(d.state, "authed");
  });

test("a refused token: authLost 4003 with the server's error, and no reconnect", { skip: NO_GATEWAY }, async () => {
  const c = client({ token: mint(uid("forger"), { secret: "not-the-secret-at-all-not-the-secret" }) });
  const statuses = collect(c, "status");
  const lost = next(c, "authLost");
  const ready = c.ready();
  c.connect();
  await assert.rejects(ready, { code: "auth_lost" });
  const detail = await lost;
  assert.equal(detail.code, 4003);
  assert.equal(detail.error?.code, "auth_failed");
  await sleep(500);
  assert.equal(c.state, "closed");
  assert.equal(statuses.filter((s) => s.state === "connecting").length, 1);
});

test("getToken() failing is reported and retried with backoff", { skip: NO_GATEWAY }, async () => {
  const me = uid("flaky");
  let calls = 0;
  const c = client({
    getToken: async () => {
      calls += 1;
      if (calls === 1) throw new Error("identity provider unreachable");
      return mint(me);
    },
  });
  const errors = collect(c, "error");
  c.connect();
  const session = await c.ready();
  assert.equal(session.user_id, me);
  assert.equal(calls, 2);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].where, "getToken");
});
