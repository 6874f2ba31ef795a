"""The uvicorn and websockets internals gateway/wsproto.py builds on are still there.

``RawWebSocketProtocol`` subclasses uvicorn's private sans-I/O WebSocket protocol,
replaces two of its instance attributes (``queue``, ``writable``) with lighter
objects, overrides three methods, and reads a dozen attributes of the parent. None
of that is public API: pyproject.toml pins uvicorn and websockets to the tested
minor versions, and these tests say what to re-check when a new release moves any
of it. Nothing here needs PostgreSQL or Redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import re
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.websockets import websockets_sansio_impl as impl
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol

from gateway import wsproto
from gateway.wsproto import RawWebSocketProtocol

if TYPE_CHECKING:
    from collections.abc import Iterator

Base = impl.WebSocketsSansIOProtocol
_SOURCE = inspect.getsource(Base)


def _recheck(what: str, where: str) -> str:
    return (f"uvicorn {uvicorn.__version__} / websockets {websockets.__version__}: {what} is not what "
            f"gateway/wsproto.py was written against. Re-check {where} (gateway/wsproto.py) against "
            f"uvicorn/protocols/websockets/websockets_sansio_impl.py before moving the pins in pyproject.toml")


def _method_source(name: str) -> str:
    return inspect.getsource(getattr(Base, name))


def _params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


@pytest.fixture
def protocol() -> Iterator[RawWebSocketProtocol]:
    """A RawWebSocketProtocol built as uvicorn's HTTP protocols build it on an upgrade (keyword arguments)."""
    loop = asyncio.new_event_loop()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    # log_config=None: the test process's logging stays as pytest set it up.
    config = uvicorn.Config(app, ws=RawWebSocketProtocol, ws_per_message_deflate=False, log_config=None)
    config.load()
    assert config.ws_protocol_class is RawWebSocketProtocol, _recheck(
        "how Config(ws=<class>) picks the WebSocket protocol", "how gateway/server.py passes ws=RawWebSocketProtocol")
    try:
        yield RawWebSocketProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()


def test_the_base_class_is_where_wsproto_imports_it() -> None:
    """The parent is an asyncio.Protocol at uvicorn.protocols.websockets.websockets_sansio_impl, and ours
    subclasses it."""
    assert issubclass(Base, asyncio.Protocol), _recheck("the base class", "the import of WebSocketsSansIOProtocol")
    assert RawWebSocketProtocol.__mro__[1] is Base, _recheck("the base class", "class RawWebSocketProtocol")
    for http_impl in ("h11_impl", "httptools_impl"):
        module = __import__(f"uvicorn.protocols.http.{http_impl}", fromlist=["_"])
        upgrade = inspect.getsource(module)
        assert re.search(r"self\.ws_protocol_class\(\s*(?:#[^\n]*\n\s*)?config=self\.config,\s*"
                         r"server_state=self\.server_state,\s*app_state=self\.app_state,?\s*\)", upgrade), _recheck(
            f"how {http_impl} constructs the WebSocket protocol on an upgrade", "RawWebSocketProtocol.__init__")


def test_constructor_signature() -> None:
    """RawWebSocketProtocol.__init__ forwards *args/**kwargs: the parent must take
    (config, server_state, app_state, _loop)."""
    assert _params(Base.__init__) == ["self", "config", "server_state", "app_state", "_loop"], _recheck(
        "WebSocketsSansIOProtocol.__init__'s parameters", "RawWebSocketProtocol.__init__")


@pytest.mark.parametrize(("name", "params", "is_async"), [
    ("handle_connect", ["self", "event"], False),
    ("send", ["self", "message"], True),
    ("send_receive_event_to_app", ["self"], False),
])
def test_overridden_methods_keep_their_signatures(name: str, params: list[str], is_async: bool) -> None:
    """Each method wsproto overrides exists on the parent with the same parameters and sync/async kind."""
    parent = getattr(Base, name, None)
    assert parent is not None and inspect.isfunction(parent), _recheck(f"{name} (gone)", f"RawWebSocketProtocol.{name}")
    assert _params(parent) == params, _recheck(f"{name}'s parameters", f"RawWebSocketProtocol.{name}")
    assert inspect.iscoroutinefunction(parent) is is_async, _recheck(
        f"whether {name} is a coroutine", f"RawWebSocketProtocol.{name}")
    assert _params(getattr(RawWebSocketProtocol, name)) == params, f"RawWebSocketProtocol.{name}: keep the parent's"


def test_the_replaced_receive_path_is_still_the_only_one() -> None:
    """The parent routes every data frame (text, binary, continuation) through send_receive_event_to_app.

    Our override (UTF-8 errors as one debug line, not a traceback) only helps if nothing
    else queues a websocket.receive.
    """
    for name in ("handle_text", "handle_bytes", "handle_cont"):
        assert "self.send_receive_event_to_app()" in _method_source(name), _recheck(
            f"{name} (no longer calls send_receive_event_to_app)", "RawWebSocketProtocol.send_receive_event_to_app")
    queuers = {name for name, member in inspect.getmembers(Base, inspect.isfunction)
               if '"type": "websocket.receive"' in inspect.getsource(member)}
    assert queuers == {"send_receive_event_to_app"}, _recheck(
        f"where websocket.receive messages are queued ({sorted(queuers)})",
        "RawWebSocketProtocol.send_receive_event_to_app")
    for name, kind in (("handle_text", "text"), ("handle_bytes", "bytes")):
        assert f'self.curr_msg_data_type = "{kind}"' in _method_source(name), _recheck(
            f"the values of curr_msg_data_type ({name})", "RawWebSocketProtocol.send_receive_event_to_app")
    assert "self.handle_connect(event)" in _method_source("handle_events"), _recheck(
        "handle_events (no longer calls handle_connect)", "RawWebSocketProtocol.handle_connect")
    assert inspect.isfunction(getattr(Base, "handle_parser_exception", None)), _recheck(
        "handle_parser_exception (gone)", "send_receive_event_to_app's invalid UTF-8 branch")
    assert _params(Base.handle_parser_exception) == ["self"], _recheck(
        "handle_parser_exception's parameters", "send_receive_event_to_app's invalid UTF-8 branch")


def test_instance_attributes_wsproto_reads_or_replaces(protocol: RawWebSocketProtocol) -> None:
    """The parent's __init__ still creates every attribute wsproto reads, of the kind it expects."""
    expected: dict[str, type | tuple[type, ...]] = {
        "conn": ServerProtocol, "frames": list, "curr_msg_data_type": str, "logger": logging.Logger,
        "close_sent": bool, "disconnected": bool, "handshake_complete": bool, "read_paused": bool,
    }
    for name, kind in expected.items():
        assert isinstance(getattr(protocol, name, None), kind), _recheck(
            f"the instance attribute {name} (expected {kind})", "RawWebSocketProtocol")
    # Set to None until connection_made; wsproto reads them only after that.
    for name in ("transport", "client"):
        assert hasattr(protocol, name), _recheck(f"the instance attribute {name}", "write_frame and the UTF-8 branch")
    # The two objects wsproto replaces are there (set by the parent) and are ours after __init__.
    assert isinstance(protocol.queue, wsproto._Inbox) and isinstance(protocol.writable, wsproto._Signal)
    assert re.search(r"self\.queue: .*= asyncio\.Queue\(\)", _SOURCE), _recheck(
        "the type of self.queue", "_Inbox and RawWebSocketProtocol.__init__")
    assert "self.writable = asyncio.Event()" in _SOURCE, _recheck(
        "the type of self.writable", "_Signal and RawWebSocketProtocol.__init__")


@pytest.mark.parametrize(("attribute", "replacement"), [("queue", wsproto._Inbox), ("writable", wsproto._Signal)])
def test_the_parent_uses_only_what_the_replacements_implement(attribute: str, replacement: type) -> None:
    """Every ``self.queue.X`` / ``self.writable.X`` the parent calls exists on _Inbox / _Signal."""
    used = set(re.findall(rf"self\.{attribute}\.(\w+)", _SOURCE))
    assert used, _recheck(f"the use of self.{attribute}", replacement.__name__)
    missing = sorted(m for m in used if not callable(getattr(replacement, m, None)))
    assert not missing, _recheck(f"self.{attribute} (now also calls {missing})", f"{replacement.__name__}")
    assignments = re.findall(rf"self\.{attribute}(?:: [^=\n]*)? = ", _SOURCE)
    assert len(assignments) == 1, _recheck(f"self.{attribute} (assigned again after __init__)", replacement.__name__)


def test_write_flow_control_drives_writable() -> None:
    """write_frame trusts ``writable``: cleared by pause_writing, set by resume_writing and connection_lost."""
    for name, call in (("pause_writing", "clear"), ("resume_writing", "set"), ("connection_lost", "set")):
        assert f"self.writable.{call}()" in _method_source(name), _recheck(
            f"how flow control drives self.writable ({name})", "RawWebSocketProtocol.write_frame")
    assert "await self.writable.wait()" in _method_source("send"), _recheck(
        "send's wait for writable", "_Signal.wait")


def test_handshake_state_wsproto_edits_after_accept() -> None:
    """handle_connect sets request, response and scope (with an extensions dict); only send reads response after."""
    connect = _method_source("handle_connect")
    for needle in ("self.request = event", "self.response = self.conn.accept(event)", '"extensions": {',
                   "self.scope"):
        assert needle in connect, _recheck(f"handle_connect ({needle!r} gone)", "RawWebSocketProtocol.handle_connect")
    readers = {name for name, member in inspect.getmembers(Base, inspect.isfunction)
               if "self.response" in inspect.getsource(member)}
    assert readers == {"handle_connect", "send"}, _recheck(
        f"who reads self.response ({sorted(readers)}); wsproto drops it after accept", "RawWebSocketProtocol.send")
    assert 'message["type"] == "websocket.accept"' in _method_source("send"), _recheck(
        "send's websocket.accept branch", "RawWebSocketProtocol.send")
    # wsproto empties the request's headers after accept (websockets keeps the request alive).
    assert "headers" in {f.name for f in dataclasses.fields(Request)}, _recheck("Request.headers", "send")
    assert callable(getattr(Headers, "clear", None)), _recheck("Headers.clear", "RawWebSocketProtocol.send")


def test_websockets_calls_wsproto_makes() -> None:
    """ServerProtocol.send_close(code, reason) as the invalid UTF-8 branch calls it."""
    assert _params(ServerProtocol.send_close)[:3] == ["self", "code", "reason"], _recheck(
        "ServerProtocol.send_close", "send_receive_event_to_app")
    assert callable(getattr(ServerProtocol, "data_to_send", None)), _recheck(
        "ServerProtocol.data_to_send", "send_receive_event_to_app's invalid UTF-8 branch")
