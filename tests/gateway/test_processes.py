"""`vybe gateway --processes 2`: two processes share the port, events cross between them, each has
its own admin port, and SIGTERM drains both (1001) and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import httpx
import pytest
import websockets
from redis_support import port_block

from gateway.auth import mint_token
from gateway_process import gateway_env, wait_ready

pytestmark = pytest.mark.anyio


async def test_two_processes_share_a_port_and_drain_together(settings, pool) -> None:
    port, admin = port_block(), port_block(0, 1)  # process i's admin port is admin + i
    env = gateway_env(settings, port, VYBE_PROCESSES="2", VYBE_ADMIN_PORT=str(admin), VYBE_NODE_ID="pair")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "gateway", env=env)
    sockets: list[websockets.ClientConnection] = []
    try:
        for p in (port, admin, admin + 1):
            await wait_ready(p, lambda: proc.returncode is None, timeout=30)
        for i in range(24):
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws")
            await ws.send(json.dumps({"type": "auth", "id": "a", "token": mint_token(settings, f"u{i}")}))
            await ws.recv()
            await ws.send(json.dumps({"type": "subscribe", "id": "s", "channel": "feed"}))
            await ws.recv()
            sockets.append(ws)
        async with httpx.AsyncClient() as http:
            counts = []
            for p in (admin, admin + 1):
                metrics = (await http.get(f"http://127.0.0.1:{p}/metrics")).text
                line = next(x for x in metrics.splitlines() if x.startswith("vybe_connections "))
                counts.append(float(line.split()[1]))
        assert sum(counts) == 24 and min(counts) > 0, counts  # the kernel spread them over both
        # A post on one process reaches readers on both (through Redis, as between nodes).
        await sockets[0].send(json.dumps({"type": "post_vybe", "id": "p", "content": "across processes"}))
        for ws in sockets:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if any(m.get("event") == "vybe.created" for m in frame):
                    break
        proc.send_signal(signal.SIGTERM)
        for ws in sockets:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_dead_process_is_restarted_and_a_killed_supervisor_leaves_no_orphan(settings, pool) -> None:
    psutil = pytest.importorskip("psutil")
    port, admin = port_block(), port_block(0, 1)
    env = gateway_env(settings, port, VYBE_PROCESSES="2", VYBE_ADMIN_PORT=str(admin))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "gateway", env=env)
    try:
        for p in (admin, admin + 1):
            await wait_ready(p, lambda: proc.returncode is None, timeout=30)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        children[0].kill()
        await asyncio.sleep(1.0)
        for p in (admin, admin + 1):  # the supervisor started it again
            await wait_ready(p, lambda: proc.returncode is None, timeout=30)
        now = psutil.Process(proc.pid).children()
        assert len(now) == 2 and children[0].pid not in {c.pid for c in now}
        proc.kill()  # SIGKILL: no chance to forward anything
        await proc.wait()
        _, alive = psutil.wait_procs(now, timeout=20)
        assert not alive, "children outlived their supervisor"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
