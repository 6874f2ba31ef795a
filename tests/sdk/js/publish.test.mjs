// `publish` to a channel of a configured namespace (the gateways run with VYBE_NAMESPACES
// naming `[namespaces.chat]` subscribe = "open", publish = true): the ack, the `publication`
// event subscribers get, and resume with `since` on such a channel as on the built-in ones.

import assert from "node:assert/strict";
import { test } from "node:test";

import { NO_GATEWAY, client, mint, next, nextEvent, uid } from "./support.mjs";

test("publish to chat: reaches subscribers, and chat: channels resume like the others", { skip: NO_GATEWAY }, async () => {
  const alice = uid("alice");
  const bob = uid("bob");
  const channel = `chat:${uid("room")}`;
  const a = client({ token: mint(alice) });
  const b = client({ token: mint(bob) });
  a.connect();
  b.connect();
  const { offset: joinedAt, ...joined } = await b.subscribe(channel);
  assert.deepEqual(joined, { channel, recovered: null, missed: 0 });
  assert.equal(typeof joinedAt, "string");

  const got = nextEvent(b, channel, (m) => m.event === "publication");
  const ack = await a.publish(channel, { text: "hello" });
  assert.equal(ack.channel, channel);
  assert.equal(typeof ack.id, "string");
  assert.ok(ack.id.length > 0);
  assert.equal(ack.state, "accepted");
  assert.equal(ack.replayed, false);
  const msg = await got;
  assert.equal(msg.type, "event");
  assert.equal(msg.channel, channel);
  assert.equal(typeof msg.offset, "string");
  assert.equal(typeof msg.ts, "number");
  assert.equal(msg.data.id, ack.id);
  assert.equal(msg.data.user_id, alice);
  assert.deepEqual(msg.data.data, { text: "hello" });
  assert.equal(b.offset(channel), msg.offset);

  // Away and back: the publication made meanwhile is replayed.
  await b.unsubscribe(channel);
  const second = await a.publish(channel, { text: "while you were away" });
  assert.equal(second.state, "accepted");
  const recovered = next(b, "recovered", (r) => r.channel === channel);
  const replayed = nextEvent(b, channel, (m) => m.data.id === second.id);
  const again = await b.subscribe(channel, { since: msg.offset });
  assert.deepEqual(again, { channel, recovered: true, missed: 1 });
  assert.equal((await recovered).missed, 1);
  assert.deepEqual((await replayed).data.data, { text: "while you were away" });

  // A namespace the server does not have is still not a channel.
  await assert.rejects(a.subscribe(`nochat:${uid("room")}`), { code: "unknown_channel" });
});

test("a digest channel: its items arrive as events, then one digest with what was skipped", { skip: NO_GATEWAY }, async () => {
  // `[namespaces.pulse]` delivers digests: every 0.3 s, the newest 2 items and how many arrived.
  const channel = `pulse:${uid("room")}`;
  const a = client({ token: mint(uid("alice")) });
  const b = client({ token: mint(uid("bob")) });
  a.connect();
  b.connect();
  await b.subscribe(channel);
  const seen = [];
  b.on("event", (m) => { if (m.channel === channel) seen.push(m.data.data.n); });
  const digest = next(b, "digest", (d) => d.channel === channel);
  for (let n = 0; n < 3; n += 1) await a.publish(channel, { n });
  const d = await digest;
  assert.equal(d.count, 3);
  assert.equal(d.skipped, 1);
  assert.deepEqual(seen, [1, 2]);  // the newest two, in order, as `publication` events
  assert.equal(b.offset(channel), d.offset);
  a.close();
  b.close();
});
