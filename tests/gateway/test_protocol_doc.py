"""Replays every ``exchange`` example of docs/protocol.md against a live gateway.

Block syntax: ``name> {json}`` sends from client ``name`` (connected, and
authenticated unless its first line is an ``auth`` or it is ``anon``);
``name< {json}`` waits for the next message of that client that matches the
pattern (a subset: ``"*"`` matches anything, ``"$x"`` captures a value the first
time and must equal it afterwards); ``name< close N`` waits for close code N;
``name> header`` (or ``header bad``) connects with the token in the Authorization header;
``name> binary|flood N|stop-reading|<raw text>``; ``! score``, ``! publish CHANNEL N``,
``! shutdown``; ``# settings: k=v, ...`` overrides gateway settings.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import jwt
import msgspec
import pytest

from gateway.auth import mint_token
from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers.consumer import Worker

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_BLOCK = re.compile(r"```exchange\n(.*?)```", re.S)
ROLES = {"mod": "MODERATOR", "mod2": "MODERATOR"}


def _blocks() -> list[str]:
    return _BLOCK.findall(DOC.read_text())


def test_every_command_error_and_close_code_has_an_example() -> None:
    """The document shows each command and each close code we send, and its error table is the catalog."""
    from common.errors import CATALOG, ErrorCode, markdown_table
    from gateway.protocol import COMMAND_TYPES, CloseCode

    text = "\n".join(_blocks())
    for cmd in COMMAND_TYPES:
        assert f'"type":"{cmd}"' in text, f"no example of {cmd}"
    doc = DOC.read_text()
    assert markdown_table() in doc, (
        "docs/protocol.md's error table differs from common/errors.py: paste markdown_table()")
    named = {code for name, code in vars(ErrorCode).items() if not name.startswith("_")}
    assert named == set(CATALOG), "ErrorCode and the catalog name different codes"
    for name, code in vars(CloseCode).items():
        if not name.startswith("_") and code not in (1008, 1011):
            assert f"| {code} |" in doc, f"close code {code} undocumented"


class Schema:
    """The published protocol schema (``/schema/protocol.json``) of a live gateway."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def errors(self, definition: str | dict[str, Any], value: Any) -> list[str]:
        ref = definition if isinstance(definition, dict) else {"$ref": f"#/$defs/{definition}"}
        validator = jsonschema.Draft202012Validator({"$defs": self.document["$defs"], **ref})
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


# Errors that say a frame does not fit the protocol: exactly the frames the schema refuses.
_REFUSED = {"malformed", "unknown_type", "invalid"}


class Replay:
    def __init__(self, live: Any, connect: Any, schema: Schema) -> None:
        self.live, self.connect, self.schema = live, connect, schema
        self.sent: dict[tuple[str, str], list[tuple[int, str, list[str]]]] = {}
        """(client, id) -> [(messages received before it was sent, command type, the schema's objections)]."""
        self.clients: dict[str, Any] = {}
        self.cursor: dict[str, int] = {}
        self.vars: dict[str, Any] = {}

    def subst(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.subst(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.subst(v) for v in value]
        if isinstance(value, str):
            if value.startswith("$token:"):
                return self.token(value)
            if value.startswith("$long:"):
                return "x" * int(value[6:])
            if value.startswith("$") and value[1:] in self.vars:
                return self.vars[value[1:]]
            return re.sub(r"\$(\w+)", lambda m: str(self.vars.get(m[1], m[0])), value)
        return value

    def token(self, spec: str) -> str:
        spec, _, channels = spec.partition("|")  # $token:alice|chat:m1,chat:m2: a `channels` claim
        if channels:
            return mint_token(self.live.settings, spec.split(":")[1], channels=channels.split(","))
        _, user, *rest = spec.split(":")
        if rest == ["expired"]:
            now = int(time.time())
            claims = {"sub": user, "role": "MEMBER", "iat": now - 100, "exp": now - 60}
            return jwt.encode(claims, self.live.settings.jwt_secret, "HS256")
        return self.live.token(user, ROLES.get(user, "MEMBER"), ttl=int(rest[0]) if rest else 3600)

    def match(self, pattern: Any, value: Any) -> bool:
        if pattern == "*":
            return True
        if isinstance(pattern, str) and re.fullmatch(r"\$\w+", pattern):
            name = pattern[1:]
            if name not in self.vars:
                self.vars[name] = value
                return True
            return self.vars[name] == value
        if isinstance(pattern, dict):
            return isinstance(value, dict) and all(k in value and self.match(v, value[k]) for k, v in pattern.items())
        if isinstance(pattern, str):
            return value == self.subst(pattern)
        return pattern == value

    async def client(self, name: str, first: str) -> Any:
        if name not in self.clients:
            auth = name != "anon" and '"type":"auth"' not in first
            token = self.token(f"$token:{name}") if auth else None
            extra = {"max_queue": 1} if name == "slow" else {}
            self.clients[name] = await self.connect(self.live, token, **extra)
            self.cursor[name] = len(self.clients[name].messages)
        return self.clients[name]

    async def send(self, name: str, text: str) -> None:
        if text.startswith("header"):  # connect with the token in the Authorization header
            assert name not in self.clients, "`header` must be a client's first line"
            token = "not-a-jwt" if text == "header bad" else self.token(f"$token:{name}")
            self.clients[name] = await self.connect(self.live, token, header=True)
            self.cursor[name] = 0
            return
        c = await self.client(name, text)
        if text == "binary":
            await c.ws.send(b"\x00\x01")
        elif text.startswith("flood "):
            for i in range(int(text.split()[1])):
                await c.ws.send(json.dumps({"type": "ping", "id": f"fl{i}"}))
        elif text == "stop-reading":
            c.stop_reading()
        else:
            try:
                frame = self.subst(json.loads(text))
            except json.JSONDecodeError:
                await c.ws.send(text)
                return
            if isinstance(frame, dict) and isinstance(frame.get("id"), str):
                entry = (len(c.messages), frame.get("type"), self.schema.errors("ClientCommand", frame))
                self.sent.setdefault((name, frame["id"]), []).append(entry)
            await c.ws.send(json.dumps(frame))

    def check_schema(self) -> None:
        """Every message received fits the schema; every acked frame fits it, with the result its
        command's type promises; every frame refused as not fitting the protocol is one it refuses."""
        for name, c in self.clients.items():
            for index, message in enumerate(c.messages):
                assert not (bad := self.schema.errors("ServerMessage", message)), f"{name} got {message}: {bad}"
                # The frame this answers: the last one sent with its id before it arrived (the
                # fixture's own commands, such as the first `auth`, are not the document's).
                sent = [e for e in self.sent.get((name, message.get("id") or ""), []) if e[0] <= index]
                if not sent:
                    continue
                _, kind, objections = sent[-1]
                if message["type"] == "ack":
                    assert not objections, (
                        f"{name}: {kind} {message['id']} was acked, yet the schema refuses it: {objections}")
                    result = self.schema.document["ack_results"][kind]
                    assert not (bad := self.schema.errors(result, message["result"])), f"{kind} result {message}: {bad}"
                elif message["type"] == "error" and message["code"] in _REFUSED:
                    assert objections, f"{name}: {message} refused a frame that the schema accepts"

    async def expect(self, name: str, text: str) -> None:
        c = await self.client(name, text)
        if text.startswith("close "):
            code, _ = await c.wait_closed(timeout=15)
            assert code == int(text.split()[1]), f"{name}: closed {code}, expected {text}"
            return
        pattern = json.loads(text)
        await c.wait_for(lambda m: self._try(pattern, m), timeout=10, start=self.cursor[name])
        self.cursor[name] = c.last_index + 1

    def _try(self, pattern: Any, message: Any) -> bool:
        saved = dict(self.vars)
        if self.match(pattern, message):
            return True
        self.vars = saved
        return False

    async def directive(self, line: str) -> None:
        gw = self.live.gateway
        match line.split():
            case ["score"]:
                s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
                w = Worker(s, gw.pool, gw.redis, load_scorer("light"),
                           Policy.from_settings("flag", "toxicity=0:1"), "doc")
                await w.ensure_group()
                while await w.step():
                    pass
            case ["publish", channel, n]:
                for i in range(int(n)):
                    await gw.publisher.publish(channel, "test.fill", {"n": i, "pad": "x" * 4000})
            case ["shutdown"]:
                self.live.server.should_exit = True
            case _:
                raise AssertionError(f"unknown directive {line}")


@pytest.mark.parametrize("index", range(len(_blocks())))
async def test_example_replays(index: int, start_gateway, connect) -> None:
    """Each example in docs/protocol.md behaves as written."""
    lines = [ln for ln in _blocks()[index].splitlines() if ln.strip()]
    overrides: dict[str, Any] = {}
    if lines[0].startswith("# settings:"):
        for item in lines.pop(0).split(":", 1)[1].split(","):
            key, value = item.strip().split("=")
            if key == "namespaces":  # a file, relative to the repository
                overrides[key] = str(DOC.parents[1] / value)
            else:
                overrides[key] = float(value) if "." in value or key.endswith("_s") else int(value)
    live = await start_gateway(**overrides)
    async with httpx.AsyncClient(base_url=live.http) as http:
        schema = Schema((await http.get("/schema/protocol.json")).json())
    replay = Replay(live, connect, schema)
    for line in lines:
        if line.startswith("! "):
            await replay.directive(line[2:])
            continue
        head, arrow, rest = re.split(r"([<>]) ", line, maxsplit=1)
        try:
            if arrow == ">":
                await replay.send(head, rest)
            else:
                await replay.expect(head, rest)
        except AssertionError as err:
            raise AssertionError(f"docs/protocol.md example {index}, line {line!r}: {str(err)[-1500:]}") from None
    try:
        replay.check_schema()
    except AssertionError as err:
        raise AssertionError(f"docs/protocol.md example {index} vs /schema/protocol.json: {err}") from None


def test_the_event_names_are_the_documented_ones() -> None:
    """gateway.protocol.EVENT_NAMES and the doc's "Event data" table name the same events."""
    from gateway.protocol import EVENT_NAMES

    table = DOC.read_text().split("## Event data", 1)[1].split("\n## ", 1)[0]
    documented = {name for row in table.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([a-z<>]+(?:\.[a-z_]+)?)`", row.split("|")[1])}
    assert documented == set(EVENT_NAMES)
