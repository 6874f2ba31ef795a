"""The load generator: thousands of WebSocket clients on one core, with almost no per-frame work.

A hand-rolled RFC 6455 client on a plain ``asyncio.Protocol`` (uvloop): the
handshake is one fixed HTTP request, server frames are unmasked and parsed in a
tight loop, and an event's only decoded field is its ``ts`` (the publish time,
epoch seconds), found with ``bytes.find`` and ``float(bytes)``. No task per
socket, no queue per socket, no JSON decode per message. Pings are answered with
pongs so the servers' heartbeats keep the sockets open.

Works with every server in the benchmark: a frame may hold one JSON object (the
peers) or a JSON array of them (our gateway); every ``"ts":`` in a frame is one
delivered event.
"""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from typing import TYPE_CHECKING

# The client side of the handshake and frames lives in the installed package (vybe
# loadtest sends the same); this module keeps only the counting client below.
from loadtest.wsclient import client_frame, handshake

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Client", "Generator", "Stats", "Window", "client_frame", "percentiles"]

_TS = b'"ts":'


class Window:
    """Deliveries observed since ``start`` (events published before it are ignored)."""

    __slots__ = ("count", "last", "lat", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.last = start
        self.count = 0
        self.lat = array("d")

    def percentiles(self) -> dict[str, float | None]:
        return percentiles(self.lat)

    def result(self) -> tuple[int, float, dict[str, float | None]]:
        """(count, last receipt, latency percentiles)."""
        return self.count, self.last, percentiles(self.lat)


class Stats:
    """Shared by all clients of one generator."""

    def __init__(self) -> None:
        self.window = Window(float("inf"))
        self.total = 0
        self.frames = 0
        self.errors: list[bytes] = []
        self.closed = 0
        self.close_codes: dict[int, int] = {}

    def reset(self, start: float) -> Window:
        self.window = Window(start)
        return self.window


class Client(asyncio.Protocol):
    """One socket. ``init`` frames are sent after the handshake; ``ready`` resolves when the
    server acknowledged the last of them (an ack with id ``ready_id``), or at once after the
    handshake when there are none."""

    __slots__ = ("alive", "buf", "init", "open", "ready", "ready_id", "request", "stats", "transport")

    def __init__(self, stats: Stats, request: bytes, init: list[bytes], ready_id: bytes | None,
                 ready: asyncio.Future[None]) -> None:
        self.stats = stats
        self.request = request
        self.init = init
        self.ready_id = ready_id
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.buf = b""
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.alive:
            self.alive = False
            self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[:data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(status.decode("latin-1")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.open = True
            data = data[end + 4:]
            if self.init:
                self.transport.write(b"".join(self.init))  # type: ignore[union-attr]
            elif not self.ready.done():
                self.ready.set_result(None)
        stats = self.stats
        n = len(data)
        pos = 0
        while n - pos >= 2:
            b1 = data[pos + 1]
            length = b1 & 0x7F
            hl = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
                hl = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
                hl = 10
            if n - pos < hl + length:
                break
            op = data[pos] & 0x0F
            payload = data[pos + hl:pos + hl + length]
            pos += hl + length
            if op == 1 or op == 0 or op == 2:
                stats.frames += 1
                i = payload.find(_TS)
                if i < 0:
                    self._control(payload)
                    continue
                if not self.ready.done():  # a resume's ack shares its frame with the missed events
                    self._control(payload)
                w = stats.window
                start = w.start
                lat = w.lat
                while i >= 0:
                    j = i + 5
                    k = payload.find(b",", j)
                    ts = float(payload[j:k])
                    stats.total += 1
                    if ts >= start:
                        w.count += 1
                        lat.append(now - ts)
                        w.last = now
                    i = payload.find(_TS, k)
            elif op == 9:  # ping
                self.transport.write(client_frame(0xA, payload))  # type: ignore[union-attr]
            elif op == 8:  # close
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                stats.close_codes[code] = stats.close_codes.get(code, 0) + 1
                self.transport.write(client_frame(0x8, payload[:2]))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
        if pos < n:
            self.buf = data[pos:]

    def _control(self, payload: bytes) -> None:
        if self.ready.done():
            if b'"error"' in payload and len(self.stats.errors) < 20:
                self.stats.errors.append(payload[:300])
            return
        if b'"error"' in payload:
            self.ready.set_exception(ConnectionError(payload[:300].decode("utf-8", "replace")))
        elif self.ready_id is not None and self.ready_id in payload:
            self.ready.set_result(None)

    def abort(self) -> None:
        if self.transport is not None:
            self.alive = False
            self.transport.abort()


class Generator:
    """Opens and holds the sockets of one load step; all state lives in :class:`Stats`."""

    def __init__(self, host: str, port: int, path: str, sources: list[str]) -> None:
        self.host, self.port, self.path = host, port, path
        self.sources = sources
        self.stats = Stats()
        self.clients: list[Client] = []
        self.connect_failures: list[str] = []

    async def connect(self, n: int, init_for: Callable[[int], list[bytes]] | None, ready_id: bytes | None,
                      concurrency: int = 200, timeout: float = 60.0) -> float:
        """Open ``n`` sockets (at most ``concurrency`` handshakes in flight); seconds taken."""
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()

        async def one(i: int) -> None:
            request = handshake(self.host, self.port, self.path)
            init = init_for(i) if init_for else []
            async with sem:
                for attempt in range(3):
                    fut: asyncio.Future[None] = loop.create_future()
                    client = Client(self.stats, request, init, ready_id, fut)
                    src = self.sources[(i + attempt) % len(self.sources)]
                    try:
                        await asyncio.wait_for(loop.create_connection(
                            lambda c=client: c, self.host, self.port, local_addr=(src, 0)), timeout)
                        await asyncio.wait_for(fut, timeout)
                    except (TimeoutError, OSError, ConnectionError) as err:
                        client.abort()
                        if attempt == 2:
                            self.connect_failures.append(f"{type(err).__name__}: {err}"[:200])
                        await asyncio.sleep(0.2)
                        continue
                    self.clients.append(client)
                    return

        await asyncio.gather(*(one(i) for i in range(n)))
        return time.monotonic() - t0

    def alive(self) -> int:
        return sum(1 for c in self.clients if c.alive)

    def cpu_s(self) -> float:
        """CPU seconds of the receive side so far (this process)."""
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def close_all(self) -> None:
        for c in self.clients:
            c.abort()  # RST: no TIME_WAIT left behind on either side
        self.clients.clear()


def percentiles(values: array, qs: tuple[float, ...] = (0.5, 0.99)) -> dict[str, float | None]:
    """p50/p99/max in milliseconds."""
    if not values:
        return {**{f"p{int(q * 100)}_ms": None for q in qs}, "max_ms": None}
    s = sorted(values)
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{int(q * 100)}_ms"] = round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 2)
    out["max_ms"] = round(s[-1] * 1000, 2)
    return out
