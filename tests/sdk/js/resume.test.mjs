// Reconnect and resume: the restartable gateway is stopped (SIGTERM: going_away, close 1001)
// while a client holds `feed`; events posted meanwhile through the other gateway arrive after
// the reconnect, replayed from the channel history (`recovered`), on `feed` and on the client's
// own `user:` channel, and a write issued while offline goes out after the new auth. Also: a write whose socket drops before its ack goes
// again with the same id and is applied once.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CONTROL_URL, NO_GATEWAY, RESTART_WS_URL, client, collect, control, mint, next, nextEvent, recordingWebSocket,
  sleep, uid,
} from "./support.mjs";

const NO_RESTART = NO_GATEWAY || (RESTART_WS_URL && CONTROL_URL ? false : "VYBE_RESTART_WS_URL / VYBE_CONTROL_URL unset");

test("the server goes away: reconnect, resubscribe with since, recovered, queued write sent", { skip: NO_RESTART }, async () => {
  const me = uid("survivor");
  const rec = recordingWebSocket();
  const a = client({ url: RESTART_WS_URL, getToken: async () => mint(me), WebSocket: rec.WebSocket,
                     backoff: { minMs: 100, maxMs: 300 } });
  const b = client({ token: mint(uid("other-node")) });  // on the gateway that stays up
  a.connect();
  b.connect();
  await a.subscribe("feed");
  const tag = uid("resume");
  const before = nextEvent(a, "feed", (m) => m.data.content === `${tag} before`);
  await b.postVybe(`${tag} before`);
  const offset = (await before).offset;
  assert.equal(a.offset("feed"), offset);
  // An offset on the personal channel too: someone reacts to a vybe of ours.
  const personal = `user:${me}`;
  const mine = await a.postVybe(`${tag} mine`);
  const reacted = nextEvent(a, personal, (m) => m.event === "reaction.added" && m.data.target_id === mine.id);
  await b.react(mine.id, "HEART");
  const personalOffset = (await reacted).offset;
  assert.equal(a.offset(personal), personalOffset);

  const statuses = collect(a, "status");
  const goingAway = next(a, "notice", (n) => n.code === "going_away", 10000);
  const away = next(a, "status", (s) => s.state === "reconnecting" && s.code === 1001, 10000);
  await control("stop");
  await goingAway;
  await away;
  const feedOffset = a.offset("feed");  // the last seen (events from other tests may have moved it)
  assert.ok(feedOffset);
  assert.equal(a.offset(personal), personalOffset);

  const queued = a.postVybe(`${tag} queued while offline`);
  const recovered = next(a, "recovered", (r) => r.channel === "feed", 15000);
  const missed = nextEvent(a, "feed", (m) => m.data.content === `${tag} missed`, 15000);
  const queuedEvent = nextEvent(b, "feed", (m) => m.data.content === `${tag} queued while offline`, 15000);
  const personalRecovered = next(a, "recovered", (r) => r.channel === personal, 15000);
  const commented = nextEvent(a, personal, (m) => m.event === "comment.created", 15000);
  await b.subscribe("feed");
  await b.postVybe(`${tag} missed`);
  const comment = await b.comment(mine.id, `${tag} a comment while you were away`);
  await sleep(300);
  assert.notEqual(a.state, "authed", "still away");

  await control("start");
  const r = await recovered;
  assert.equal(r.since, feedOffset, "resumed from the last offset seen");
  assert.ok(r.missed >= 1, JSON.stringify(r));
  await missed;
  const pr = await personalRecovered;
  assert.equal(pr.since, personalOffset);
  assert.equal((await commented).data.id, comment.id);
  const vybe = await queued;
  assert.equal(vybe.user_id, me);
  await queuedEvent;

  const resubscribes = rec.sent.filter((f) => f.type === "subscribe" && f.channel === "feed");
  assert.equal(resubscribes.length, 2);
  assert.equal(resubscribes[0].since, undefined);
  assert.equal(resubscribes[1].since, feedOffset);
  assert.deepEqual(rec.sent.filter((f) => f.channel === personal).map((f) => [f.type, f.since]),
                   [["subscribe", undefined], ["subscribe", personalOffset]],
                   "the personal channel: its resume point at the first auth, then a catch-up after the reconnect");
  assert.equal(rec.sent.filter((f) => f.type === "auth").length, 2, "authenticated again on the new socket");
  const states = statuses.map((s) => s.state);
  assert.ok(states.includes("reconnecting") && states.at(-1) === "authed", JSON.stringify(states));
});

test("a write whose socket drops before the ack goes again with the same id, applied once", { skip: NO_GATEWAY }, async () => {
  const me = uid("retrier");
  const content = `${me}: sent twice, stored once`;
  let dropped = false;
  const rec = recordingWebSocket({
    onSend(ws, frame) {
      if (frame.type === "post_vybe" && !dropped) {
        dropped = true;
        ws.close(4000, "test: drop before the ack");  // messages after close() are not delivered
      }
    },
  });
  const watcher = client({ token: mint(uid("watcher")) });
  watcher.connect();
  await watcher.subscribe("feed");
  const created = collect(watcher, "event");
  const a = client({ token: mint(me), WebSocket: rec.WebSocket });
  a.connect();
  await a.ready();
  const reconnecting = next(a, "status", (s) => s.state === "reconnecting");
  const seen = nextEvent(watcher, "feed", (m) => m.data.content === content);
  const vybe = await a.postVybe(content);
  await reconnecting;
  const posts = rec.sent.filter((f) => f.type === "post_vybe");
  assert.equal(posts.length, 2, "sent again after the reconnect");
  assert.equal(posts[0].id, posts[1].id, "with the same id");
  assert.equal(vybe.content, content);
  await seen;
  await sleep(500);
  const mine = created.filter((m) => m.event === "vybe.created" && m.data.content === content);
  assert.equal(mine.length, 1, "stored once");
  assert.equal(mine[0].data.id, vybe.id);
});

test("after a reconnect a channel with no event yet resumes from before its first event", { skip: NO_GATEWAY }, async () => {
  const rec = recordingWebSocket();
  const user = uid("quiet");
  const a = client({ token: mint(user), WebSocket: rec.WebSocket });
  let opened = 0;
  a.on("status", (s) => { if (s.state === "open") opened += 1; });
  a.connect();
  const vybe = await a.postVybe("a vybe nobody reacts to");
  const channel = `vybe:${vybe.id}`;  // no events come on it: the ack still names a resume point
  await a.subscribe(channel);
  await assert.rejects(a.subscribe("vybe:00000000-0000-0000-0000-00000000000a"), { code: "not_found" });
  const joinedAt = a.offset(channel);
  assert.equal(typeof joinedAt, "string");
  assert.equal(typeof a.offset(`user:${user}`), "string", "the own channel too, before its first event");
  const unrecovered = collect(a, "unrecovered");
  const recovered = next(a, "recovered", (r) => r.channel === channel);
  rec.sockets.at(-1).close(4000, "test: drop");
  const r = await recovered;
  assert.equal(r.since, joinedAt);
  assert.equal(opened, 2);
  assert.deepEqual(unrecovered, [], "nothing is unknown");
  assert.ok(a.has(channel));
  assert.ok(!a.has("vybe:00000000-0000-0000-0000-00000000000a"), "a refused channel is not held");
  const resent = rec.sent.filter((f) => f.type === "subscribe" && f.channel.startsWith("vybe:0000"));
  assert.equal(resent.length, 1, "nor subscribed again after the reconnect");
});
