// A scripted WebSocket server (node:net only) for what a live gateway cannot be made to do on
// demand: a `gap` notice, `unavailable` answers, a repeated event, a 1009 close. The script
// gets every client frame (parsed JSON) with the connection, and answers as it likes.

import { createHash } from "node:crypto";
import net from "node:net";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

function frame(opcode, payload) {
  const len = payload.length;
  let head;
  if (len < 126) {
    head = Buffer.from([0x80 | opcode, len]);
  } else if (len < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

class Conn {
  constructor(sock) {
    this.sock = sock;
    this.closed = false;
    this.frames = [];  // what the client sent (JSON)
  }

  /** Send a frame of messages (the server always sends a JSON array). */
  send(...messages) {
    if (!this.closed) this.sock.write(frame(0x1, Buffer.from(JSON.stringify(messages))));
  }

  sendBinary(bytes) {
    if (!this.closed) this.sock.write(frame(0x2, Buffer.from(bytes)));
  }

  close(code = 1000, reason = "") {
    if (this.closed) return;
    this.closed = true;
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2);
    this.sock.write(frame(0x8, body));
    setTimeout(() => this.sock.destroy(), 50);
  }

  /** Answer a command frame with an ack. */
  ack(f, result = {}) {
    this.send({ type: "ack", id: f.id, result });
  }

  error(f, code, extra = {}) {
    this.send({ type: "error", id: f.id ?? null, code, message: code, ...extra });
  }
}

/**
 * Start a fake gateway; `script(conn, frame)` runs for every client frame. Returns
 * {url, conns, close()}; `conns` lists every connection in order.
 */
export async function fakeGateway(script) {
  const conns = [];
  const server = net.createServer((sock) => {
    const conn = new Conn(sock);
    let buf = Buffer.alloc(0);
    let upgraded = false;
    sock.on("error", () => {});
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString("latin1");
        buf = buf.subarray(end + 4);
        const key = /sec-websocket-key:\s*(\S+)/i.exec(head)[1];
        const accept = createHash("sha1").update(key + GUID).digest("base64");
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
                   + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
        upgraded = true;
        conns.push(conn);
      }
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0] & 0x0f;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        const maskAt = off;
        if (masked) off += 4;
        if (buf.length < off + len) return;
        const payload = Buffer.from(buf.subarray(off, off + len));
        if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskAt + (i % 4)];
        buf = buf.subarray(off + len);
        if (opcode === 0x8) {  // the client closes: answer, hang up
          if (!conn.closed) {
            conn.closed = true;
            sock.write(frame(0x8, payload.subarray(0, 2)));
          }
          sock.end();
          return;
        }
        if (opcode === 0x9) {  // ping
          sock.write(frame(0xa, payload));
          continue;
        }
        if (opcode !== 0x1) continue;
        const f = JSON.parse(payload.toString("utf8"));
        conn.frames.push(f);
        script(conn, f);
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    conns,
    close() {
      for (const c of conns) c.sock.destroy();
      server.close();
    },
  };
}

/** A script's usual answer to `auth`. */
export function authOk(conn, f, user = "fake-user") {
  conn.ack(f, { user_id: user, role: "MEMBER", expires_at: Math.floor(Date.now() / 1000) + 3600, blocked: [] });
}
