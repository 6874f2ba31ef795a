"""Schemathesis against a live gateway: the OpenAPI document and the server agree.

Every operation of ``/schema/openapi.json`` is fuzzed (examples, coverage, fuzzing and
stateful phases, every check) as a member and as a moderator: schema-valid requests must
be accepted, invalid ones refused with a documented status and the ``{code, message}``
body, every answer must match its documented schema, and nothing may be a 5xx.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from db import apps

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(600)]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.parametrize("role", ["MEMBER", "MODERATOR", "APP"])
async def test_schemathesis_finds_no_failure(role: str, start_gateway, tmp_path: Path) -> None:
    """Zero schemathesis failures, for a member, a moderator (the members' API) and an app's backend
    (the server API, with an API key and a namespace of its own)."""
    namespaces = tmp_path / "namespaces.toml"
    namespaces.write_text('[namespaces.room]\nsubscribe = "open"\npresence = true\napp = "fuzz"\n')
    live = await start_gateway(namespaces=str(namespaces))
    if role == "APP":
        _, token = await apps.create_app(live.gateway.pool, "fuzz")
        # No stateful phase: the document's links join the members' operations, not these.
        paths = ["--include-path-regex", "^/api/server/"]
        phases = "examples,coverage,fuzzing"
    else:
        token = live.token(f"fuzz-{role.lower()}", role=role)
        paths = ["--exclude-path-regex", "^/api/server/"]
        phases = "examples,coverage,fuzzing,stateful"
    # The fuzzer posts thousands of writes: no rate limit applies to REST, and the idempotency keys it
    # invents collide on purpose (a 409 `conflict` is documented).
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "run", f"{live.http}/schema/openapi.json",
        "--header", f"Authorization: Bearer {token}", *paths,
        "--checks", "all", "--phases", phases,
        "--max-examples", os.environ.get("VYBE_SCHEMATHESIS_EXAMPLES", "50"),
        "--workers", "1", "--seed", "1", "--request-timeout", "10",
        "--report", "junit,vcr", "--report-dir", str(os.environ.get("VYBE_SCHEMATHESIS_REPORTS", tmp_path)),
        "--suppress-health-check", "too_slow",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
    )
    out, _ = await process.communicate()
    text = out.decode(errors="replace")
    assert process.returncode == 0, text[-12000:]
