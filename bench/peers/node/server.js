// Reference peer: Node.js socket.io with @socket.io/redis-adapter (the documented multi-node setup).
// Every socket joins room "feed"; events come in through the Redis adapter (published by the benchmark
// in the redis-emitter format). Env: BENCH_PORT, BENCH_REDIS_URL, BENCH_KEY (adapter channel prefix).
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

const port = parseInt(process.env.BENCH_PORT || "8767", 10);
const url = process.env.BENCH_REDIS_URL || "redis://127.0.0.1:6379/0";
const key = process.env.BENCH_KEY || "socket.io";

async function main() {
  const pub = createClient({ url });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const httpServer = createServer();
  const io = new Server(httpServer, { transports: ["websocket"], pingInterval: 20000, pingTimeout: 20000,
                                      adapter: createAdapter(pub, sub, { key }) });
  io.on("connection", (socket) => socket.join("feed"));
  httpServer.listen(port, "127.0.0.1", 2048);
  const stop = () => { io.close(); process.exit(0); };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
main().catch((err) => { console.error(err); process.exit(1); });
