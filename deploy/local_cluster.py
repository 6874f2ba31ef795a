"""A multi-node Vybe Live on one machine, from real parts: N gateways behind nginx,
M moderation workers, one PostgreSQL and one Redis.

    python deploy/local_cluster.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/0 [--gateways 2] [--workers 2] [--pubsub classic|sharded]

Without the URLs it uses the embedded PostgreSQL and Redis (``db/embedded.py``).
Each run gets its own database (created, migrated with ``vybe migrate``, dropped at
the end) and its own Redis prefix, so runs and test sessions can share servers.
nginx runs as a non-daemon child with its config, pid file, logs and temp files in
a temporary directory, listening on a free port and proxying WebSockets (and
REST) to the gateways; it names the node that served a request in the
``X-Vybe-Upstream`` response header (the gateway's address). Ctrl-C stops
everything. ``tests/deploy/test_multinode.py`` drives it.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]

NGINX_CONF = """\
# Written by deploy/local_cluster.py; the production config is deploy/nginx/nginx.conf.
{user}
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/temp/body;
    proxy_temp_path {tmp}/temp/proxy;
    fastcgi_temp_path {tmp}/temp/fastcgi;
    uwsgi_temp_path {tmp}/temp/uwsgi;
    scgi_temp_path {tmp}/temp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream vybe_gateways {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /ws {{
            proxy_pass http://vybe_gateways;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            # A draining or dead node refuses the handshake: try the next one.
            proxy_next_upstream error timeout http_502 http_503;
            add_header X-Vybe-Upstream $upstream_addr always;
        }}
        location / {{
            proxy_pass http://vybe_gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream error timeout http_502 http_503;
            add_header X-Vybe-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def _psql(admin_dsn: str, sql: str) -> None:
    """Run one statement on the admin database with asyncpg (no psql binary needed)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


class Node:
    """One child process (gateway or worker) and how to reach it."""

    def __init__(self, name: str, kind: str, proc: subprocess.Popen[bytes], port: int | None, log: Path) -> None:
        self.name, self.kind, self.proc, self.port, self.log = name, kind, proc, port, log

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def alive(self) -> bool:
        return self.proc.poll() is None


class LocalCluster:
    """Start with :meth:`start` (or as a context manager); :meth:`stop` ends every child."""

    def __init__(self, admin_dsn: str, redis_url: str, *, gateways: int = 2, workers: int = 2,
                 pubsub: str = "classic", extra_env: dict[str, str] | None = None,
                 tmp: Path | None = None, nginx: bool = True) -> None:
        self.admin_dsn, self.redis_url = admin_dsn, redis_url
        self.n_gateways, self.n_workers = gateways, workers
        self.run_id = secrets.token_hex(4)
        self.database = f"vybe_lc_{self.run_id}"
        self.database_url = _with_database(admin_dsn, self.database)
        self.prefix = f"lc{self.run_id}:"
        self.jwt_secret = "local-cluster-" + secrets.token_hex(24)
        self.pubsub = pubsub
        self._own_tmp = tmp is None
        self.tmp = Path(tempfile.mkdtemp(prefix="vybe-cluster-")) if tmp is None else tmp
        self.extra_env = extra_env or {}
        self.gateways: list[Node] = []
        self.workers: list[Node] = []
        self.with_nginx = nginx
        self.nginx: subprocess.Popen[bytes] | None = None
        self.nginx_port = 0
        self._db_created = False

    # -- environment ---------------------------------------------------------

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VYBE_")}
        env.update({
            "VYBE_DATABASE_URL": self.database_url, "VYBE_REDIS_URL": self.redis_url,
            "VYBE_REDIS_PREFIX": self.prefix, "VYBE_JWT_SECRET": self.jwt_secret,
            "VYBE_PUBSUB": self.pubsub, "VYBE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
        })
        env.update(self.extra_env)
        env.update(more)
        return env

    @property
    def url(self) -> str:
        """The WebSocket URL through nginx."""
        return f"ws://127.0.0.1:{self.nginx_port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def token(self, user: str, role: str = "MEMBER") -> str:
        """A member (or ``role``) JWT the gateways accept (``vybe token`` does the same)."""
        from common.settings import load_settings
        from gateway.auth import mint_token

        return mint_token(load_settings({}, jwt_secret=self.jwt_secret), user, role=role, ttl_s=3600)

    def node_of(self, upstream: str) -> Node | None:
        """The gateway behind an ``X-Vybe-Upstream`` value (nginx may list several on retries: the last)."""
        last = upstream.split(",")[-1].strip()
        return next((g for g in self.gateways if g.address == last), None)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> LocalCluster:
        try:
            _psql(self.admin_dsn, f'CREATE DATABASE "{self.database}"')
            self._db_created = True
            subprocess.run([sys.executable, "-m", "cli", "migrate"], env=self.env(), cwd=ROOT,
                           check=True, capture_output=True, timeout=60)
            for i in range(self.n_gateways):
                self.gateways.append(self._spawn_gateway(f"gw-{i + 1}"))
            for i in range(self.n_workers):
                self.workers.append(self._spawn_worker(f"worker-{i + 1}"))
            for g in self.gateways:
                self.wait_ready(g)
            if self.with_nginx:
                self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, kind: str, port: int | None, env: dict[str, str]) -> Node:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "cli", kind], env=env, cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT)
        return Node(name, kind, proc, port, log)

    def _spawn_gateway(self, name: str) -> Node:
        port = free_port()
        return self._spawn(name, "gateway", port, self.env(VYBE_PORT=str(port), VYBE_NODE_ID=name))

    def _spawn_worker(self, name: str) -> Node:
        return self._spawn(name, "worker", None, self.env())

    def add_worker(self) -> Node:
        node = self._spawn_worker(f"worker-{len(self.workers) + 1}")
        self.workers.append(node)
        return node

    def wait_ready(self, node: Node, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not node.alive():
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode}: {self.tail(node)}")
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(f"http://{node.address}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{node.name} not ready after {timeout} s: {self.tail(node)}")

    def tail(self, node: Node, lines: int = 30) -> str:
        try:
            return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _nginx_user(self) -> str:
        if os.geteuid() != 0:
            return ""
        # As root the workers drop to an unprivileged user; the temp dir is open to them.
        for name in ("www-data", "nobody", "nginx"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return f"user {name} {grp.getgrgid(entry.pw_gid).gr_name};"
        return "user root;"

    def _start_nginx(self) -> None:
        nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                               if Path(p).exists()), None)
        if nginx is None:
            raise RuntimeError("nginx not found: apt-get install -y nginx-light")
        ngx = self.tmp / "nginx"
        (ngx / "temp").mkdir(parents=True, exist_ok=True)
        for d in (self.tmp, ngx):
            d.chmod(0o755)
        (ngx / "temp").chmod(0o777)
        self.nginx_port = free_port()
        servers = "\n".join(f"        server {g.address} max_fails=1 fail_timeout=5s;" for g in self.gateways)
        conf = ngx / "nginx.conf"
        conf.write_text(NGINX_CONF.format(user=self._nginx_user(), tmp=ngx, servers=servers, port=self.nginx_port))
        check = subprocess.run([nginx, "-t", "-p", str(ngx), "-c", str(conf), "-e", str(ngx / "error.log")],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx config rejected: {check.stderr}")
        with open(ngx / "stdout.log", "ab") as out:
            self.nginx = subprocess.Popen([nginx, "-p", str(ngx), "-c", str(conf), "-e", str(ngx / "error.log")],
                                          stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                raise RuntimeError(f"nginx exited: {(ngx / 'error.log').read_text(errors='replace')}")
            with contextlib.suppress(OSError, urllib.error.URLError), \
                    urllib.request.urlopen(f"{self.http}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("nginx did not answer")

    def stop(self) -> None:
        children = [n.proc for n in self.gateways + self.workers]
        if self.nginx is not None:
            children.append(self.nginx)
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown; gateways drain
        for proc in children:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.nginx = None
        if self._db_created:
            with contextlib.suppress(Exception):
                _psql(self.admin_dsn, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self._db_created = False
        with contextlib.suppress(Exception):
            _delete_prefix(self.redis_url, self.prefix)
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _delete_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def _services(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str]]:
    with contextlib.ExitStack() as stack:
        if args.database_url and args.redis_url:
            yield args.database_url, args.redis_url
            return
        from db.embedded import embedded_postgres, embedded_redis

        dsn = args.database_url or stack.enter_context(embedded_postgres(tmp / "services"))
        url = args.redis_url or stack.enter_context(embedded_redis(tmp / "services"))
        yield dsn, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("VYBE_DATABASE_URL"),
                        help="an admin DSN of PostgreSQL (a database is created per run); default: embedded")
    parser.add_argument("--redis-url", default=os.environ.get("VYBE_REDIS_URL"), help="default: embedded")
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pubsub", choices=["classic", "sharded"], default="classic")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="vybe-cluster-"))
    with _services(args, tmp) as (dsn, url):
        cluster = LocalCluster(dsn, url, gateways=args.gateways, workers=args.workers, pubsub=args.pubsub, tmp=tmp)
        with cluster:
            print(f"nginx:     {cluster.url}  ({cluster.http})")
            for g in cluster.gateways:
                print(f"{g.name}:      {g.url}  (log {g.log})")
            for w in cluster.workers:
                print(f"{w.name}:  pid {w.proc.pid}  (log {w.log})")
            print(f"database:  {cluster.database_url}\nprefix:    {cluster.prefix}")
            print(f"token:     {cluster.token('alice')}\nCtrl-C stops everything.", flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            print("stopping", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
