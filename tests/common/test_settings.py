"""Settings: typed, read once, and a bad value names its variable in one line."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from common.settings import SettingsError, load_settings


def test_defaults_and_conversion() -> None:
    """Strings from the environment become typed fields."""
    s = load_settings({"VYBE_PORT": "9001", "VYBE_PREMODERATION": "true", "VYBE_RATE_PER_S": "2.5"})
    assert (s.port, s.premoderation, s.rate_per_s) == (9001, True, 2.5)


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"VYBE_PORT": "eighty"}, "VYBE_PORT", "int"),
        ({"VYBE_PORT": "70000"}, "VYBE_PORT", "not a TCP port"),
        ({"VYBE_DATABASE_URL": "http://x"}, "VYBE_DATABASE_URL", "scheme"),
        ({"VYBE_DATABASE_URL": "postgresql://h:notaport/db"}, "VYBE_DATABASE_URL", "unparseable"),
        ({"VYBE_REDIS_URL": "mysql://x"}, "VYBE_REDIS_URL", "scheme"),
        ({"VYBE_JWT_ALGORITHMS": "HS256,none"}, "VYBE_JWT_ALGORITHMS", "never 'none'"),
        ({"VYBE_MODERATION_MODE": "loud"}, "VYBE_MODERATION_MODE", "one of"),
        ({"VYBE_MAX_FRAME_BYTES": "-1"}, "VYBE_MAX_FRAME_BYTES", "positive"),
        ({"VYBE_MAX_VYBE_CHARS": "5001"}, "VYBE_MAX_VYBE_CHARS", "5000"),
        ({"VYBE_MAX_COMMENT_CHARS": "0"}, "VYBE_MAX_COMMENT_CHARS", "2000"),
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    """Each invalid value raises an error naming the variable and the problem."""
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert info.value.variable == variable
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"VYBE_PORT": "x"}, "VYBE_PORT"),
        ({"VYBE_DATABASE_URL": "postgresql://127.0.0.1:1/nowhere"}, "VYBE_DATABASE_URL"),
    ],
)
def test_process_stops_with_one_line(env: dict[str, str], variable: str) -> None:
    """`vybe migrate` with a bad or unreachable setting exits 2 with one stderr line naming it."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "migrate"], env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], proc.stderr


def test_gateway_with_a_short_jwt_secret_stops_with_one_line() -> None:
    """`vybe gateway` checks its key settings before starting anything: one line and exit 2, not a
    traceback from inside the server's startup."""
    env = {"PATH": "/usr/bin:/bin", "VYBE_JWT_SECRET": "short", "VYBE_DATABASE_URL": "postgresql://127.0.0.1:1/x",
           "VYBE_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.run([sys.executable, "-m", "cli", "gateway"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "VYBE_JWT_SECRET" in lines[0], proc.stderr


def test_worker_with_a_scorer_it_cannot_load_stops_before_waiting_for_the_database() -> None:
    """`vybe worker` loads its model before it waits for PostgreSQL (VYBE_STARTUP_WAIT_S): a scorer that cannot load
    stops it with one line and exit 2 at once, not after the wait, even while nothing answers at the database URL."""
    env = {"PATH": "/usr/bin:/bin", "VYBE_SCORER": "detoxify", "VYBE_STARTUP_WAIT_S": "60",
           "VYBE_DATABASE_URL": "postgresql://127.0.0.1:1/x", "VYBE_REDIS_URL": "redis://127.0.0.1:1/0"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2 and time.monotonic() - started < 30
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "VYBE_SCORER" in lines[0], proc.stderr
