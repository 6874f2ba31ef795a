// The client against a live gateway: auth, subscribe, events another client caused, command
// ids and errors, the queue before connect, the client-side rate limit, frame size limits.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  NO_GATEWAY, CommandError, client, collect, mint, next, nextEvent, recordingWebSocket, uid,
} from "./support.mjs";

test("auth, subscribe, and an event another client caused", { skip: NO_GATEWAY }, async () => {
  const alice = uid("alice");
  const bob = uid("bob");
  const a = client({ token: mint(alice, { name: "Alice" }) });
  const b = client({ token: mint(bob) });
  const statuses = collect(a, "status");
  const auths = collect(a, "auth");
  assert.equal(a.state, "idle");
  a.connect();
  b.connect();
  const session = await a.ready();
  assert.equal(session.user_id, alice);
  assert.equal(session.role, "MEMBER");
  assert.equal(a.session.user_id, alice);
  assert.deepEqual(statuses.map((s) => s.state), ["connecting", "open", "authed"]);
  assert.equal(auths.length, 1);
  assert.equal(auths[0].refreshed, false);

  const { offset: joinedAt, ...ack } = await a.subscribe("feed");
  assert.deepEqual(ack, { channel: "feed", recovered: null, missed: 0 });
  assert.ok(a.has("feed"));
  assert.ok(a.channels.includes("feed"));
  assert.equal(typeof joinedAt, "string", "even a channel with no event yet names a resume point");
  assert.equal(a.offset("feed"), joinedAt);

  const content = `hello from ${bob}`;
  const perChannel = [];
  const offChannel = a.onChannel("feed", (msg) => perChannel.push(msg));
  const wildcard = [];
  a.onChannel("fe*", (msg) => wildcard.push(msg));
  let offsetThen = null;  // as the event is handled (other test files may post on feed too)
  const seen = nextEvent(a, "feed", (m) => {
    if (m.event !== "vybe.created" || m.data.content !== content) return false;
    offsetThen = a.offset("feed");
    return true;
  });
  const vybe = await b.postVybe(content, { vybe_type: "GRATITUDE" });
  assert.equal(vybe.user_id, bob);
  assert.equal(vybe.content, content);
  assert.equal(vybe.type, "GRATITUDE");
  const msg = await seen;
  assert.equal(msg.type, "event");
  assert.equal(msg.data.id, vybe.id);
  assert.equal(msg.data.user_id, bob);
  assert.equal(typeof msg.offset, "string");
  assert.equal(typeof msg.ts, "number");
  assert.equal(offsetThen, msg.offset, "the client keeps the channel's last offset");
  assert.ok(perChannel.some((m) => m.data.id === vybe.id));
  assert.ok(wildcard.some((m) => m.data.id === vybe.id));
  offChannel();
  const n = perChannel.length;
  await b.postVybe(`${content} again`);
  await nextEvent(a, "feed", (m) => m.data.content === `${content} again`);
  assert.equal(perChannel.length, n, "an unsubscribed listener hears nothing");
});

test("acks and errors are matched to their command by id", { skip: NO_GATEWAY }, async () => {
  const rec = recordingWebSocket();
  const a = client({ token: mint(uid("member")), WebSocket: rec.WebSocket });
  a.connect();
  await a.ready();
  const results = await Promise.allSettled([
    a.ping(),
    a.subscribe("mod:flagged"),
    a.subscribe("nosuch:lobby"),
    a.send("teleport", { where: "moon" }),
    a.postVybe(""),
    a.react("00000000-0000-0000-0000-000000000000", "HEART"),
    a.send("ping"),
  ]);
  const [ping, forbidden, unknownChannel, unknownType, invalid, notFound, ping2] = results;
  assert.equal(ping.status, "fulfilled");
  assert.equal(typeof ping.value.time, "number");
  assert.equal(ping2.status, "fulfilled");
  const codes = [forbidden, unknownChannel, unknownType, invalid, notFound].map((r) => {
    assert.equal(r.status, "rejected");
    assert.ok(r.reason instanceof CommandError, String(r.reason));
    return r.reason.code;
  });
  assert.deepEqual(codes, ["forbidden", "unknown_channel", "unknown_type", "invalid_content", "not_found"]);

  // Each error names the id of the very frame that caused it; every frame had its own id.
  const frameOf = (id) => rec.sent.find((f) => f.id === id);
  assert.equal(frameOf(forbidden.reason.id).channel, "mod:flagged");
  assert.equal(frameOf(unknownChannel.reason.id).channel, "nosuch:lobby");
  assert.equal(frameOf(unknownType.reason.id).type, "teleport");
  assert.equal(frameOf(invalid.reason.id).type, "post_vybe");
  assert.equal(frameOf(notFound.reason.id).type, "react");
  const ids = rec.sent.map((f) => f.id);
  assert.equal(new Set(ids).size, ids.length, `ids repeat: ${ids}`);
  assert.ok(ids.every((id) => typeof id === "string" && id.length > 0 && id.length <= 64));
  for (const m of rec.received.filter((m) => m.type === "error")) {
    assert.ok(ids.includes(m.id), `an error for an id never sent: ${JSON.stringify(m)}`);
  }
  // A refused channel is not held (no resubscribe after a reconnect).
  assert.equal(a.has("mod:flagged"), false);
  assert.equal(a.has("nosuch:lobby"), false);
});

test("a moderator may subscribe to mod:flagged; subscribeError for a member", { skip: NO_GATEWAY }, async () => {
  const mod = client({ token: mint(uid("mod"), { role: "MODERATOR" }) });
  const member = client({ token: mint(uid("member")) });
  const refused = next(member, "subscribeError");
  mod.connect();
  member.connect();
  assert.equal((await mod.subscribe("mod:flagged")).channel, "mod:flagged");
  await assert.rejects(member.subscribe("mod:flagged"), { code: "forbidden" });
  const detail = await refused;
  assert.equal(detail.channel, "mod:flagged");
  assert.equal(detail.error.code, "forbidden");
});

test("commands issued before connect() are queued and sent after auth", { skip: NO_GATEWAY }, async () => {
  const rec = recordingWebSocket();
  const me = uid("early");
  const a = client({ token: mint(me), WebSocket: rec.WebSocket });
  const sub = a.subscribe("feed");
  const post = a.postVybe(`queued before connect by ${me}`);
  const pong = a.ping();
  assert.equal(rec.sent.length, 0);
  a.connect();
  assert.equal((await sub).channel, "feed");
  const vybe = await post;
  assert.equal(vybe.user_id, me);
  await pong;
  assert.equal(rec.sent[0].type, "auth", "auth goes first");
  assert.deepEqual(rec.sent.slice(1).filter((f) => f.channel !== `user:${me}`).map((f) => f.type).sort(),
                   ["ping", "post_vybe", "subscribe"]);
});

test("subscribe is idempotent: a held channel is not subscribed twice", { skip: NO_GATEWAY }, async () => {
  const rec = recordingWebSocket();
  const a = client({ token: mint(uid("twice")), WebSocket: rec.WebSocket });
  a.connect();
  const [one, two] = await Promise.all([a.subscribe("feed"), a.subscribe("feed")]);
  const three = await a.subscribe("feed");
  assert.deepEqual(one, two);
  assert.deepEqual(one, three);
  assert.equal(rec.sent.filter((f) => f.type === "subscribe" && f.channel === "feed").length, 1);
  assert.deepEqual(await a.unsubscribe("feed"), { channel: "feed" });
  assert.equal(a.has("feed"), false);
  assert.equal(rec.sent.filter((f) => f.type === "unsubscribe").length, 1);
  await a.ping();
  assert.ok(!rec.received.some((m) => m.type === "error"), JSON.stringify(rec.received));
});

test("your user: channel: events and offsets, and it cannot be let go", { skip: NO_GATEWAY }, async () => {
  const me = uid("blocker");
  const other = uid("blocked");
  const a = client({ token: mint(me) });
  const b = client({ token: mint(other) });  // a user exists from their first auth on
  a.connect();
  b.connect();
  await Promise.all([a.ready(), b.ready()]);
  const personal = `user:${me}`;
  assert.ok(a.has(personal), "held from auth on");
  const changed = nextEvent(a, personal, (m) => m.event === "blocks.changed");
  assert.deepEqual(await a.block(other), { blocked: [other] });
  const msg = await changed;
  assert.deepEqual(msg.data.blocked, [other]);
  assert.equal(a.offset(personal), msg.offset);
  assert.deepEqual(await a.unblock(other), { blocked: [] });
  await assert.rejects(a.unsubscribe(personal), { code: "forbidden" });
  assert.ok(a.has(personal));
});

test("unrecovered on a bogus since; recovered with a real one", { skip: NO_GATEWAY }, async () => {
  const a = client({ token: mint(uid("resumer")) });
  const b = client({ token: mint(uid("poster")) });
  a.connect();
  b.connect();
  const tag = uid("resume");
  await b.postVybe(`${tag} zero`);  // the feed has history: a lost offset's answer names a fresh one
  const unrecovered = next(a, "unrecovered");
  const ack = await a.subscribe("feed", { since: "1-2-3" });
  assert.equal(ack.recovered, false);
  assert.equal(ack.missed, 0);
  const u = await unrecovered;
  assert.equal(u.channel, "feed");
  assert.equal(u.since, "1-2-3");
  // The next resume starts from the ack's fresh offset, not from the lost one again.
  assert.ok(typeof ack.offset === "string" && ack.offset !== "1-2-3", JSON.stringify(ack));
  assert.equal(a.offset("feed"), ack.offset);

  // A real offset: unsubscribe, miss one, resubscribe with since.
  const first = nextEvent(a, "feed", (m) => m.data.content === `${tag} one`);
  await b.postVybe(`${tag} one`);
  const offset = (await first).offset;
  await a.unsubscribe("feed");
  await b.postVybe(`${tag} two`);
  const recovered = next(a, "recovered");
  const missed = nextEvent(a, "feed", (m) => m.data.content === `${tag} two`);
  const again = await a.subscribe("feed", { since: offset });
  assert.equal(again.recovered, true);
  assert.ok(again.missed >= 1, JSON.stringify(again));
  const r = await recovered;
  assert.equal(r.channel, "feed");
  assert.equal(r.since, offset);
  assert.equal(r.missed, again.missed);
  await missed;
});

test("the client-side rate limit keeps under the server's; without it, refusals are retried", { skip: NO_GATEWAY }, async () => {
  const limited = recordingWebSocket();
  const a = client({ token: mint(uid("polite")), WebSocket: limited.WebSocket });
  a.connect();
  await a.ready();
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 60 }, () => a.ping()));
  const elapsed = Date.now() - t0;
  assert.equal(limited.received.filter((m) => m.code === "rate_limited").length, 0);
  assert.ok(elapsed >= 1500, `60 pings at 15/s after a burst of 30 took only ${elapsed} ms`);

  const unlimited = recordingWebSocket();
  const b = client({ token: mint(uid("rude")), WebSocket: unlimited.WebSocket, rateLimit: false });
  b.connect();
  await b.ready();
  const pongs = await Promise.all(Array.from({ length: 60 }, () => b.ping()));
  assert.equal(pongs.length, 60);
  const refused = unlimited.received.filter((m) => m.code === "rate_limited");
  assert.ok(refused.length > 0, "the server refused none: the test proves nothing");
  for (const m of refused) {
    assert.equal(unlimited.sent.filter((f) => f.id === m.id).length >= 2, true, "a refused ping goes again, same id");
  }
});

test("frames over the limits: refused here, or matched to the server's id-less error", { skip: NO_GATEWAY }, async () => {
  const rec = recordingWebSocket();
  const a = client({ token: mint(uid("big")), WebSocket: rec.WebSocket });
  a.connect();
  await a.ready();
  await assert.rejects(a.postVybe("x".repeat(1 << 20)), { code: "frame_too_large" });
  assert.equal(rec.sent.filter((f) => f.type === "post_vybe").length, 0, "never sent (it would close the socket)");
  const t0 = Date.now();
  await assert.rejects(a.postVybe("y".repeat(70000)), { code: "frame_too_large" });
  assert.ok(Date.now() - t0 < 3000, "answered, not timed out");
  assert.equal(a.state, "authed");
  await a.ping();
});
