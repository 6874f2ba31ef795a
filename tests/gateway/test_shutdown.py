"""Shutdown and refusal leave no false signals: exit status, stale viewer counts, log noise."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

import pytest
import websockets

from gateway.auth import mint_token
from gateway_process import free_port, gateway_env, wait_ready
from rooms import viewer_count_is, viewers_on_two_nodes

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_clean_drain_exits_zero(settings, redis, sig: signal.Signals) -> None:
    """`vybe gateway` drains a connected client (1001) on SIGTERM/SIGINT and exits 0, not 143/130."""
    port = free_port()
    env = gateway_env(settings, port)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "gateway", env=env)
    try:
        await wait_ready(port, lambda: proc.returncode is None)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "id": "a", "token": mint_token(settings, "drained")}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[0]["type"] == "ack"
            proc.send_signal(sig)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 15)
            assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_withdraw_drops_viewer_counts_at_once(start_gateway, connect) -> None:
    """A node that withdraws its presence takes its viewers out of the total now, not at heartbeat expiry."""
    a, _, viewers = await viewers_on_two_nodes(start_gateway, connect, 2.0)  # a stale count would linger 6 s
    count_is = viewer_count_is
    watcher = viewers[2]
    await watcher.wait_for(count_is(3), timeout=5)
    await a.gateway.presence.withdraw()
    await watcher.wait_for(count_is(1), timeout=1)
    await viewers[0].close()  # wakes a's presence loop: it must not report its viewers again
    await asyncio.sleep(0.5)
    assert [e["data"]["viewers"] for e in watcher.events("looproom.presence")][-1] == 1
    await a.gateway.presence.withdraw()  # drain runs twice (server, then lifespan): a no-op now


async def test_invalid_utf8_text_frame_closes_1007_quietly(live, connect, caplog) -> None:
    """A text frame that is not UTF-8 is closed with 1007 and logs no traceback at any level."""
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's loggers do not propagate to caplog's root handler
    uvicorn_log.addHandler(caplog.handler)
    try:
        caplog.set_level(logging.DEBUG, logger="uvicorn.error")
        c = await connect(live, live.token("garbler"))
        await c.ws.send(b'{"type": "ping", "id": "\xff\xfe"}', text=True)  # websockets sends bytes as is
        code, _ = await c.wait_closed()
        assert code == 1007
        await asyncio.sleep(0.1)  # the app sees the disconnect and unwinds
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
