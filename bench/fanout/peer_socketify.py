"""Reference peer: socketify.py (uWebSockets in C++, driven from Python), fanning out with
uWebSockets' own pub/sub (``app.publish``: one call, the library writes to every subscriber
underneath), fed by Redis pub/sub.

    python -m bench.fanout.peer_socketify  (env BENCH_PORT, BENCH_CHANNEL, BENCH_REDIS_URL)

Pings every 20 s like the others (uWebSockets' idle timeout of 40 s with automatic pings).
"""

from __future__ import annotations

from typing import Any

from socketify import App, CompressOptions, OpCode

from bench.fanout.relay import port, relay

PORT = port(8767)
TOPIC = "feed"
# The loop holds only weak references to tasks: keep the relay's here, or it may be collected.
_TASKS: set[Any] = set()


def on_open(ws: Any) -> None:
    ws.subscribe(TOPIC)


def main() -> None:
    app = App()
    app.ws("/*", {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 16 * 1024,
        "idle_timeout": 40,
        "send_pings_automatically": True,
        "max_backpressure": 1024 * 1024,
        "open": on_open,
    })
    app.listen(PORT, lambda config: None)
    _TASKS.add(app.loop.ensure_future(relay(lambda data: app.publish(TOPIC, data, OpCode.TEXT))))
    app.run()


if __name__ == "__main__":
    main()
