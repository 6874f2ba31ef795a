// Command timeouts against a stalled server: a TCP server that completes the WebSocket
// handshake, then never answers a frame. No gateway needed.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import net from "node:net";
import { after, before, test } from "node:test";

import { CommandError, VybeClient, mint, next, sleep } from "./support.mjs";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
let server;
let upgrades = 0;
let framesIn = 0;
const sockets = new Set();

before(async () => {
  server = net.createServer((sock) => {
    sockets.add(sock);
    let head = "";
    let upgraded = false;
    sock.on("data", (chunk) => {
      if (upgraded) {
        framesIn += 1;  // read and ignored: the stall
        return;
      }
      head += chunk.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)[1];
      const accept = createHash("sha1").update(key + GUID).digest("base64");
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
                 + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
      upgraded = true;
      upgrades += 1;
    });
    sock.on("error", () => {});
    sock.on("close", () => sockets.delete(sock));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
});

after(() => {
  for (const s of sockets) s.destroy();
  server.close();
});

const url = () => `ws://127.0.0.1:${server.address().port}/ws`;

test("a command on a stalled socket rejects with timeout after commandTimeoutMs", async () => {
  const c = new VybeClient({ url: url(), token: mint("stalled", { secret: "x" }), WebSocket: globalThis.WebSocket,
                             commandTimeoutMs: 400, backoff: { minMs: 20, maxMs: 50 } });
  try {
    const opened = next(c, "status", (s) => s.state === "open", 3000);
    c.connect();
    await opened;
    const t0 = Date.now();
    const err = await c.ping().then(() => null, (e) => e);
    const elapsed = Date.now() - t0;
    assert.ok(err instanceof CommandError, String(err));
    assert.equal(err.code, "timeout");
    assert.equal(typeof err.id, "string");
    assert.ok(elapsed >= 380 && elapsed < 2000, `timed out after ${elapsed} ms`);
    assert.ok(framesIn >= 1, "the auth frame reached the server");
    // The unanswered `auth` marks the socket dead: the client drops it and dials again.
    await next(c, "status", (s) => s.state === "reconnecting", 3000);
    await next(c, "status", (s) => s.state === "open", 3000);
    assert.ok(upgrades >= 2, `upgrades: ${upgrades}`);
  } finally {
    c.close();
  }
});

test("a per-command timeout, and close() rejects what is pending with closed", async () => {
  const c = new VybeClient({ url: url(), token: mint("stalled2", { secret: "x" }), commandTimeoutMs: 5000 });
  const statuses = [];
  c.on("status", (s) => statuses.push(s.state));
  c.connect();
  const quick = c.send("ping", {}, { timeoutMs: 100 });
  const slow = c.postVybe("never answered");
  const sub = c.subscribe("feed");
  await assert.rejects(quick, { code: "timeout" });
  await sleep(50);
  c.close();
  await assert.rejects(slow, { code: "closed" });
  await assert.rejects(sub, { code: "closed" });
  await assert.rejects(c.ping(), { code: "closed" });
  assert.equal(c.state, "closed");
  assert.equal(statuses.at(-1), "closed");
  assert.throws(() => c.connect(), /closed for good/);
});
