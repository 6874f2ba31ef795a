"""``--native-reader``: the receive side of a load step in C (``reader.c``), for sockets the Python
generator connected and readied.

The Python generator costs ~3-4 us per frame received, so at peak it, not the server, was the limit
(90-99 % of its core), and socketify's one-event-per-frame peak was capped by it. After the warm-up
the Python side stops reading (``pause_reading``) and hands the descriptors to the reader, which counts
events and latencies the same way (every ``"ts":`` in a frame) and answers pings. The orchestration
(publishing, probes, steps) is unchanged: this class offers what they use of :class:`Generator`.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.fanout.loadgen import Generator

SOURCE = Path(__file__).with_name("reader.c")


def build(workdir: Path) -> Path:
    """Compile the reader (gcc -O2) once per source change."""
    exe = workdir / "reader"
    if not exe.exists() or exe.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE)], check=True)
    return exe


class NativeWindow:
    """A window of the reader's counts (what ``loadgen.Window`` is for the Python clients)."""

    def __init__(self, reader: NativeReader, start: float) -> None:
        self.reader, self.start = reader, start

    @property
    def count(self) -> int:
        return int(self.reader.ask("count").split()[0])

    def percentiles(self) -> dict[str, float | None]:
        return self.result()[2]

    def result(self) -> tuple[int, float, dict[str, float | None]]:
        """(count, last receipt, latency percentiles), read at one moment."""
        count, last, p50, p99, top = self.reader.ask("report").split()
        pct: dict[str, float | None] = {"p50_ms": None, "p99_ms": None, "max_ms": None}
        if float(p99) >= 0:
            pct = {"p50_ms": round(float(p50) * 1000, 2), "p99_ms": round(float(p99) * 1000, 2),
                   "max_ms": round(float(top) * 1000, 2)}
        return int(count), float(last), pct


class NativeReader:
    """Stands in for a :class:`Generator` (``alive``, ``stats.reset``, ``stats.close_codes``, ``cpu_s``)."""

    def __init__(self, gen: Generator, exe: Path, workdir: Path, core: int) -> None:
        live = [c for c in gen.clients if c.alive and c.transport is not None and not c.transport.is_closing()]
        if any(c.buf for c in live):
            raise RuntimeError("a socket holds a partial frame: cannot hand it over")
        fds = []
        for c in live:
            fd = c.transport.get_extra_info("socket").fileno()  # type: ignore[union-attr]
            if fd >= 0:
                c.transport.pause_reading()  # type: ignore[union-attr]
                fds.append(fd)
        path = workdir / f"reader-fds-{os.getpid()}.txt"
        path.write_text("\n".join(map(str, fds)))
        self.gen = gen
        self.stats = self
        self.proc = subprocess.Popen(["taskset", "-c", str(core), str(exe), str(path)], pass_fds=fds,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, command: str) -> str:
        if self.proc.stdin is None or self.proc.stdout is None:
            raise RuntimeError("the native reader has no pipes")
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        poller = select.poll()  # not select(): the pipe's descriptor is above 1024 with 10k sockets open
        poller.register(self.proc.stdout, select.POLLIN)
        if not poller.poll(30_000):  # never hang the bench on it
            raise RuntimeError(f"the native reader did not answer {command!r} in 30 s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the native reader exited ({self.proc.poll()})")
        return line.strip()

    def alive(self) -> int:
        return int(self.ask("count").split()[2])

    def reset(self, start: float) -> NativeWindow:
        self.ask(f"reset {start:.6f}")
        return NativeWindow(self, start)

    @property
    def close_codes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for item in self.ask("closes").split():
            code, n = item.split(":")
            out[int(code)] = int(n)
        return out

    @property
    def errors(self) -> list[bytes]:
        return self.gen.stats.errors

    def cpu_s(self) -> float:
        from bench.fanout.run import proc_cpu_s

        return self.gen.cpu_s() + proc_cpu_s(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError):
                self.ask("quit")
            deadline = time.monotonic() + 5
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __getattr__(self, name: str) -> Any:  # everything else (clients, connect failures) from the generator
        return getattr(self.gen, name)
