"""The JavaScript client SDK (gateway/static/js/vybe-client.js) under Node's own test runner.

Two `vybe gateway` processes run on the test's services: the main one, and a restartable one
that the JS tests stop and start through a small control endpoint (POST /stop, /start,
/restart) to test reconnect and resume. Node runs ``node --experimental-websocket --test
tests/sdk/js/`` with their URLs and the HS256 secret in its environment; the test passes when
Node exits 0 (its output is shown otherwise). Needs Node >= 20 on PATH (skipped without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_process import free_port, gateway_env

if TYPE_CHECKING:
    from collections.abc import Iterator

    from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = "tests/sdk/js/"
NODE = shutil.which("node")
TOKEN_WARN_S = "2"     # short tokens warn at once (jwt_leeway_s is 0): the refresh tests stay quick
NODE_TIMEOUT_S = 60.0
NAMESPACES_TOML = ('[namespaces.chat]\nsubscribe = "open"\npublish = true\n'
                   '[namespaces.pulse]\nsubscribe = "open"\npublish = true\ndelivery = "digest"\n'
                   'digest_interval_s = 0.3\ndigest_items = 2\n')


def _node_major() -> int:
    if NODE is None:
        return 0
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=False).stdout
    try:
        return int(out.strip().lstrip("v").split(".")[0])
    except ValueError:
        return 0


pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(_node_major() < 20, reason="Node >= 20 is not on PATH"),
]


class GatewayProcess:
    """One `vybe gateway` process on a fixed port: started, stopped (SIGTERM: drain) and started again."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()

    def start(self, timeout: float = 20.0) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "cli", "gateway"], env=self.env, cwd=ROOT,
                                             stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            with httpx.Client() as http:
                while time.monotonic() < deadline:
                    assert self.proc.poll() is None, f"the gateway exited early:\n{self.log.read_text()}"
                    with contextlib.suppress(httpx.TransportError):
                        if http.get(f"http://127.0.0.1:{self.port}/readyz").status_code == 200:
                            return
                    time.sleep(0.05)
            raise AssertionError(f"the gateway never became ready:\n{self.log.read_text()}")

    def stop(self, timeout: float = 20.0) -> None:
        with self.lock:
            proc, self.proc = self.proc, None
            if proc is None or proc.poll() is not None:
                return
            proc.send_signal(signal.SIGTERM)  # drains: going_away, then 1001, to every socket
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def control_server(gateway: GatewayProcess) -> Iterator[str]:
    """http://127.0.0.1:PORT whose POST /stop, /start and /restart act on ``gateway``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            actions = {"/stop": [gateway.stop], "/start": [gateway.start],
                       "/restart": [gateway.stop, gateway.start]}
            steps = actions.get(self.path)
            if steps is None:
                self._answer(404, {"error": f"no action {self.path}"})
                return
            try:
                for step in steps:
                    step()
            except Exception as err:  # noqa: BLE001 - the JS test shows the failure
                self._answer(500, {"error": f"{type(err).__name__}: {err}"})
                return
            self._answer(200, {"ok": True, "action": self.path[1:]})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="sdk-control", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.timeout(150)
async def test_js_sdk_against_live_gateways(settings: Settings, redis: Any, tmp_path: Path) -> None:
    """`node --test tests/sdk/js/` passes against two live gateway processes (one restartable)."""
    namespaces = tmp_path / "namespaces.toml"
    namespaces.write_text(NAMESPACES_TOML)
    extra = {"VYBE_TOKEN_WARN_S": TOKEN_WARN_S, "VYBE_JWT_LEEWAY_S": "0", "VYBE_NAMESPACES": str(namespaces)}
    main_port, restart_port = free_port(), free_port()
    main = GatewayProcess(gateway_env(settings, main_port, VYBE_NODE_ID="sdk-main", **extra), main_port,
                          tmp_path / "gateway-main.log")
    restartable = GatewayProcess(gateway_env(settings, restart_port, VYBE_NODE_ID="sdk-restartable", **extra),
                                 restart_port, tmp_path / "gateway-restartable.log")
    try:
        await asyncio.gather(asyncio.to_thread(main.start), asyncio.to_thread(restartable.start))
        async with httpx.AsyncClient() as http:  # the pages (and apps) load the SDK from the gateway
            served = await http.get(f"http://127.0.0.1:{main_port}/static/js/vybe-client.js")
        assert served.status_code == 200 and "javascript" in served.headers["content-type"]
        assert served.content == (ROOT / "gateway/static/js/vybe-client.js").read_bytes()
        with control_server(restartable) as control_url:
            env = {**os.environ, "VYBE_WS_URL": f"ws://127.0.0.1:{main_port}/ws",
                   "VYBE_JWT_SECRET": settings.jwt_secret or "",
                   "VYBE_RESTART_WS_URL": f"ws://127.0.0.1:{restart_port}/ws",
                   "VYBE_CONTROL_URL": control_url, "VYBE_TOKEN_WARN_S": TOKEN_WARN_S}
            assert NODE is not None
            proc = await asyncio.create_subprocess_exec(
                NODE, "--experimental-websocket", "--test", JS_TESTS, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                out, _ = await proc.communicate()
                pytest.fail(f"node --test ran over {NODE_TIMEOUT_S} s:\n{out.decode(errors='replace')}")
            output = out.decode(errors="replace")
            if proc.returncode != 0:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in (main.log, restartable.log)
                                 if p.exists())
                pytest.fail(f"node --test exited {proc.returncode}:\n{output}\n{logs}")
    finally:
        await asyncio.gather(asyncio.to_thread(main.stop), asyncio.to_thread(restartable.stop))
