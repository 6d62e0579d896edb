"""The Phoenix Channels wire protocol, as the official `phoenix` JavaScript client speaks it.

A message is `[join_ref, ref, topic, event, payload]` (serializer 2.0.0, the client's
default) or `{"join_ref", "ref", "topic", "event", "payload"}` (1.0.0). The client
sends heartbeats on topic `phoenix`; every request that carries a `ref` is answered
with `phx_reply` `{status, response}` under the same refs; a channel the server ends
gets `phx_close`, one that fails gets `phx_error`, both under its join ref.

Server pushes are encoded here straight into WebSocket frames: a frame from the
server is not masked, so one push to a topic is the same bytes for every socket of
that serializer, and the live hub encodes it once however many sockets get it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgspec

from service.core.input_bounds import NESTING_MESSAGE

PHOENIX_TOPIC = "phoenix"
HEARTBEAT = "heartbeat"
JOIN = "phx_join"
LEAVE = "phx_leave"
REPLY = "phx_reply"
CLOSE = "phx_close"
ERROR = "phx_error"
# What Phoenix answers to a message for a topic the socket has not joined.
UNMATCHED_TOPIC = "unmatched topic"
EMPTY_OBJECT = b"{}"

Ref = str | int | None

_encode = msgspec.json.Encoder().encode


class ProtocolError(ValueError):
    """A client frame that is not a message of the negotiated serializer."""


@dataclass(frozen=True, slots=True)
class Message:
    """One client message; `payload` is decoded JSON (usually an object)."""

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


def text_frame(data: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 section 5.2), as servers send."""
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + data


def reply_payload(status: str, response: bytes = EMPTY_OBJECT) -> bytes:
    """The payload of a `phx_reply`: `{"status": ..., "response": ...}` (response already JSON)."""
    return b'{"status":' + _encode(status) + b',"response":' + response + b"}"


class _V2Message(msgspec.Struct, array_like=True):
    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: Any


class _V1Message(msgspec.Struct):
    topic: str
    event: str
    payload: Any = None
    ref: Ref = None
    join_ref: Ref = None


class _JsonSerializer:
    """What both serializers share: a message decoded by a msgspec decoder of its shape."""

    vsn: str
    shape: str  # for the error a client gets when it sends something else
    decoder: msgspec.json.Decoder[Any]

    def decode(self, data: str | bytes) -> Message:
        try:
            raw = self.decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"expected {self.shape}: {exc}") from None
        except RecursionError:  # msgspec's bound on nesting (see service/core/input_bounds.py)
            raise ProtocolError(NESTING_MESSAGE) from None
        return Message(raw.join_ref, raw.ref, raw.topic, raw.event, raw.payload)


class PhoenixV2(_JsonSerializer):
    """Serializer 2.0.0: JSON arrays."""

    vsn = "2.0.0"
    shape = "[join_ref, ref, topic, event, payload]"
    decoder = msgspec.json.Decoder(_V2Message)

    def encode(self, topic: str, event: str, payload: bytes, join_ref: Ref = None, ref: Ref = None) -> bytes:
        """A message as a WebSocket frame; `payload` is already JSON."""
        refs = _encode(join_ref) + b"," + _encode(ref)
        return text_frame(b"".join((b"[", refs, b",", _encode(topic), b",", _encode(event), b",", payload, b"]")))


class PhoenixV1(_JsonSerializer):
    """Serializer 1.0.0: JSON objects (older clients)."""

    vsn = "1.0.0"
    shape = "{topic, event, payload, ref}"
    decoder = msgspec.json.Decoder(_V1Message)

    def encode(self, topic: str, event: str, payload: bytes, join_ref: Ref = None, ref: Ref = None) -> bytes:
        fields = (b'{"topic":', _encode(topic), b',"event":', _encode(event), b',"payload":', payload)
        refs = (b',"ref":', _encode(ref), b',"join_ref":', _encode(join_ref), b"}")
        return text_frame(b"".join((*fields, *refs)))


V1 = PhoenixV1()
V2 = PhoenixV2()
# The `vsn` query parameter names the serializer; Phoenix takes 1.0.0 when it is absent.
SERIALIZERS: dict[str, PhoenixV1 | PhoenixV2] = {V1.vsn: V1, V2.vsn: V2}
DEFAULT_VSN = V1.vsn
