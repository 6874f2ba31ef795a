"""Frame formats of the socket: JSON text (``vybe.json``, the default) and MessagePack binary
(``vybe.msgpack``), negotiated by WebSocket subprotocol. Both carry the same messages
(``gateway.protocol``'s structs); a :class:`Codec` decodes client frames and builds server
frames in its format, and converts a JSON-encoded element (the hub encodes each event once as
JSON) to its own format once per event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from common.errors import ErrorCode
from gateway.protocol import (
    ClientCommand,
    DecodeFailure,
    Error,
    IdOnly,
    decode_command,
    encode,
    peek_id,
    refusal,
)

# -- wire formats: JSON text frames, or MessagePack binary frames ----------------
# A client picks one with the WebSocket subprotocol; the messages are the same structs
# either way. The hub builds events as JSON elements and transcodes each once per
# format (``Codec.from_json``), so the JSON path pays nothing for MessagePack.

JSON_SUBPROTOCOL = "vybe.json"
MSGPACK_SUBPROTOCOL = "vybe.msgpack"


class Codec:
    """A socket's wire format, fixed at the handshake: JSON text frames (this class).

    What the send queue holds is an *element*: one or more encoded messages in a form
    that ``join`` concatenates without decoding them; ``payload`` turns an element into
    a server frame's payload, an array of its messages. Here an element is messages
    joined by commas, and the payload puts brackets around it."""

    binary = False
    subprotocol = JSON_SUBPROTOCOL

    def decode(self, data: str | bytes) -> ClientCommand:
        """One client frame as a command, or :class:`DecodeFailure` with a typed error."""
        return decode_command(data)

    def peek_id(self, data: str | bytes) -> str | None:
        return peek_id(data)

    def encode(self, message: object) -> bytes:
        """One message as an element."""
        return encode(message)

    def join(self, elements: list[bytes]) -> bytes:
        """One element holding the messages of ``elements``, in order."""
        return b",".join(elements)

    def payload(self, element: bytes) -> bytes:
        """The payload of one server frame carrying ``element``'s messages."""
        return b"[" + element + b"]"

    def from_json(self, element: bytes) -> bytes:
        """A JSON element (as the hub builds events) as an element of this format."""
        return element

    def wrong_frame(self) -> Error:
        """The answer to a frame of the other kind (binary on a JSON socket)."""
        return Error(None, ErrorCode.BINARY_UNSUPPORTED, "binary frames are not supported; send JSON text")


class MsgpackCodec(Codec):
    """MessagePack binary frames: a client frame is one map (the JSON command's fields), a
    server frame one array of maps. An element is an array too (``join`` merges arrays).
    The content is the JSON's: messages go through ``msgspec.to_builtins`` first, so a
    datetime is the same ISO string, not a timestamp extension."""

    binary = True
    subprotocol = MSGPACK_SUBPROTOCOL

    def decode(self, data: str | bytes) -> ClientCommand:
        return decode_msgpack_command(data if isinstance(data, bytes) else data.encode())

    def peek_id(self, data: str | bytes) -> str | None:
        try:
            cid = _msgpack_id.decode(data if isinstance(data, bytes) else data.encode()).id
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return cid if cid is not None and len(cid) <= 64 else None

    def encode(self, message: object) -> bytes:
        return _msgpack.encode((msgspec.to_builtins(message),))

    def join(self, elements: list[bytes]) -> bytes:
        if len(elements) == 1:
            return elements[0]
        count, bodies = 0, []
        for element in elements:
            n, start = _array_header(element)
            count += n
            bodies.append(element[start:])
        return msgpack_array_header(count) + b"".join(bodies)

    def payload(self, element: bytes) -> bytes:
        return element

    def from_json(self, element: bytes) -> bytes:
        value = _json_decoder.decode(b"[" + element + b"]")
        try:
            return _msgpack.encode(value)
        except OverflowError:  # an integer beyond 64 bits: JSON holds it, MessagePack cannot
            return _msgpack.encode(_big_ints_as_text(value))

    def wrong_frame(self) -> Error:
        return Error(None, ErrorCode.MALFORMED,
                     f"text frames are not accepted on a {MSGPACK_SUBPROTOCOL} socket; send binary MessagePack frames")


JSON_CODEC = Codec()
MSGPACK_CODEC = MsgpackCodec()
CODECS: dict[str, Codec] = {JSON_SUBPROTOCOL: JSON_CODEC, MSGPACK_SUBPROTOCOL: MSGPACK_CODEC}


def negotiate(offered: list[str]) -> tuple[Codec, str | None]:
    """The codec for a handshake's offered subprotocols and the one to echo in the accept: the
    first offered that we speak (the client lists them by preference). None of ours offered
    (today's clients): JSON, and no subprotocol echoed."""
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec, name
    return JSON_CODEC, None


_msgpack = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(ClientCommand)
_msgpack_probe = msgspec.msgpack.Decoder(dict[str, object])
_msgpack_id = msgspec.msgpack.Decoder(IdOnly)
_json_decoder = msgspec.json.Decoder()


def decode_msgpack_command(data: bytes) -> ClientCommand:
    """Decode one MessagePack client frame, or raise :class:`DecodeFailure` with a typed error."""
    try:
        return _msgpack_decoder.decode(data)
    except msgspec.ValidationError as err:
        raise DecodeFailure(_classify_msgpack(data, str(err))) from err
    except msgspec.DecodeError as err:  # not MessagePack, trailing bytes, a string that is not UTF-8
        raise DecodeFailure(Error(None, ErrorCode.MALFORMED, f"frame is not valid MessagePack: {err}")) from err


def _classify_msgpack(data: bytes, message: str) -> Error:
    try:
        raw = _msgpack_probe.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Error(None, ErrorCode.MALFORMED, "frame must be a MessagePack map with string keys and a `type` field")
    return refusal(raw, message)


def msgpack_array_header(count: int) -> bytes:
    """The MessagePack header of an array of ``count`` items (the items follow it as they are)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _array_header(element: bytes) -> tuple[int, int]:
    """(items, header length) of a MessagePack array (an element, as this module encodes them)."""
    first = element[0]
    if first & 0xF0 == 0x90:
        return first & 0x0F, 1
    if first == 0xDC:
        return int.from_bytes(element[1:3], "big"), 3
    if first == 0xDD:
        return int.from_bytes(element[1:5], "big"), 5
    raise ValueError(f"not a MessagePack array (first byte {first:#x})")


def _big_ints_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    if isinstance(value, list):
        return [_big_ints_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _big_ints_as_text(v) for k, v in value.items()}
    return value
