"""GET /socket/websocket: Phoenix Channels over a WebSocket (API.md "WebSocket API").

The official `phoenix` JavaScript client connects unchanged with
`new Socket("/socket", {params: {token}})`. The token (an API key secret or a session
token) is checked before the upgrade: a bad one is a 401, a key without the read
scope a 403, and neither gets a socket. Each
connection reads client messages in its handler and is a subscriber of the process's
live hub, which writes pushes to it directly.

A connection's send queue is its transport's write buffer: everything it is sent goes
there, and once more than `live_send_queue_bytes` wait in it the connection is too slow:
its channels get `phx_error`, it is closed with 1013 and, if it still does not read,
dropped a few seconds later. The server's memory never holds more for one client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from schemas.live import JoinRefusal
from service.core import metrics
from service.core.errors import ApiError, bad_parameter
from service.http.appkeys import LIVE_HUB, PROJECTOR, SETTINGS
from service.http.auth import principal_of, requires
from service.http.params import Parameter, Query, one_of, takes
from service.http.ws_frames import require_masked_frames
from service.live.channels import ChannelRefusal, Topic, client_event, join
from service.live.hub import Subscription
from service.live.phoenix import (
    CLOSE,
    DEFAULT_VSN,
    EMPTY_OBJECT,
    ERROR,
    HEARTBEAT,
    JOIN,
    LEAVE,
    PHOENIX_TOPIC,
    REPLY,
    SERIALIZERS,
    UNMATCHED_TOPIC,
    Message,
    PhoenixV1,
    PhoenixV2,
    ProtocolError,
    reply_payload,
)
from service.resources.credentials import Principal

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# How long a closing socket has to answer our close frame (or, when too slow, to read
# what was sent before it) before its connection is dropped.
CLOSE_TIMEOUT_SECONDS = 5.0
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes

_encode = msgspec.json.Encoder().encode

# Declared, not enforced: the Phoenix client adds its own connect params, which are ignored.
SOCKET_QUERY = Query(
    (
        Parameter("vsn", one_of(SERIALIZERS, DEFAULT_VSN), "the Phoenix serializer version"),
        Parameter("token", {"type": "string"}, "an API key or a session token (browsers cannot set headers)"),
    )
)


@routes.get("/socket/websocket")
@requires("read", token_param=True)
@takes(SOCKET_QUERY)
async def live_socket(request: web.Request) -> web.StreamResponse:
    """Phoenix Channels WebSocket: experiment, telemetry and dashboard channels."""
    vsn = request.query.get("vsn", DEFAULT_VSN)
    serializer = SERIALIZERS.get(vsn)
    if serializer is None:
        raise bad_parameter("vsn", f"names no serializer this server has; use one of {', '.join(SERIALIZERS)}")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        protocols=("phoenix",),  # chosen when the client sends its token as a sub-protocol
        compress=False,  # a push is framed once for all its sockets; per-socket compression would undo that
        max_msg_size=settings.ws_max_frame_bytes,
        timeout=CLOSE_TIMEOUT_SECONDS,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "bad_request", "this endpoint takes a WebSocket upgrade (GET with Upgrade: websocket)")
    principal = principal_of(request)
    with request.app[LIVE_HUB].admitted(principal.key.id, settings.live_max_connections_per_key):
        await ws.prepare(request)
        require_masked_frames(request, ws)
        try:
            await PhoenixConnection(request, ws, serializer, principal).run()
        except Exception:
            # Past the upgrade the error middleware's HTTP answer would be written into the
            # socket as if it were frames: close it as a WebSocket instead.
            logger.exception("a WebSocket of key %s failed", principal.key.id)
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
    return ws


@dataclass(slots=True)
class Channel:
    """A joined topic: the join's ref (every later message of the channel carries it)."""

    topic: Topic
    join_ref: Any
    subscription: Subscription


class PhoenixConnection:
    """One client socket: its channels, its messages in and its pushes out."""

    transport_name = "websocket"

    def __init__(
        self, request: web.Request, ws: web.WebSocketResponse, wire: PhoenixV1 | PhoenixV2, principal: Principal
    ) -> None:
        self.wire = wire
        self.principal = principal
        self._ws = ws
        self._transport = request.transport
        self._projector = request.app[PROJECTOR]
        self._hub = request.app[LIVE_HUB]
        settings = request.app[SETTINGS]
        self._heartbeat_timeout = settings.ws_heartbeat_timeout_seconds
        self._queue_limit = settings.live_send_queue_bytes
        self._max_channels = settings.ws_max_channels
        self._channels: dict[str, Channel] = {}
        self._closing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Answer the client's messages until it leaves, is closed, or stays silent too long."""
        self._hub.connect(self)
        try:
            while self._closing is None:
                try:
                    received = await self._ws.receive(timeout=self._heartbeat_timeout)
                except TimeoutError:
                    self.end(WSCloseCode.OK, "heartbeat timeout")
                    break
                if received.type == WSMsgType.TEXT:
                    await self._on_text(received.data)
                elif received.type == WSMsgType.BINARY:
                    self.end(WSCloseCode.UNSUPPORTED_DATA, "binary messages are not supported; use JSON text")
                else:  # closed by the client, or an error aiohttp already closed for (frame too large...)
                    break
        finally:
            self._leave_all()
            self._hub.disconnect(self)
            if self._closing is not None:
                await self._closing

    # -- the hub's side ------------------------------------------------------------------

    def deliver(self, chunks: Sequence[bytes]) -> None:
        """Write pushes in order; a client that let too much pile up is disconnected instead."""
        transport = self._transport
        if self._closing is not None or transport is None or transport.is_closing():
            return
        for chunk in chunks:
            if transport.get_write_buffer_size() > self._queue_limit:
                self._fell_behind()
                return
            transport.write(chunk)

    def end(self, code: int, reason: str) -> None:
        """Close the socket (from the hub: credentials revoked, server stopping; or from here)."""
        if self._closing is not None:
            return
        self._leave_all()
        self._closing = asyncio.create_task(self._close(code, reason), name="ws-close")

    async def _close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason.encode()[:MAX_CLOSE_REASON_BYTES], drain=False)

    def _fell_behind(self) -> None:
        metrics.LIVE_SLOW_DISCONNECTS.labels(self.transport_name).inc()
        logger.info("closing a WebSocket of key %s: it fell %d bytes behind", self.principal.key.id, self._queue_limit)
        transport = self._transport
        assert transport is not None
        for channel in self._channels.values():  # as Phoenix tells a client its channel died
            refs = (channel.join_ref, channel.join_ref)
            transport.write(self.wire.encode(channel.topic.name, ERROR, EMPTY_OBJECT, *refs))
        self.end(WSCloseCode.TRY_AGAIN_LATER, "too slow: the client did not read its messages in time")
        # Whatever it does not read by then is dropped with the connection.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, transport.abort)

    def _leave_all(self) -> None:
        for channel in self._channels.values():
            self._hub.unsubscribe(channel.subscription)
        self._channels.clear()

    # -- the client's side ---------------------------------------------------------------

    async def _on_text(self, data: str) -> None:
        try:
            message = self.wire.decode(data)
        except ProtocolError as exc:
            self.end(WSCloseCode.INVALID_TEXT, f"malformed message: {exc}")
            return
        if message.topic == PHOENIX_TOPIC and message.event == HEARTBEAT:
            self._reply(message, "ok", without_join_ref=True)
        elif message.event == JOIN:
            await self._join(message)
        elif (channel := self._channels.get(message.topic)) is None:
            self._refuse(message, ChannelRefusal("unmatched_topic", UNMATCHED_TOPIC), without_join_ref=True)
        elif message.join_ref is not None and message.join_ref != channel.join_ref:
            pass  # sent for an earlier join of this topic (the client raced its close): Phoenix drops it too
        elif message.event == LEAVE:
            self._leave(channel, message)
        else:
            self._client_event(channel, message)

    async def _join(self, message: Message) -> None:
        if message.topic not in self._channels and len(self._channels) >= self._max_channels:
            reason = f"a socket joins at most {self._max_channels} channels at once; leave one first"
            self._refuse(message, ChannelRefusal("too_many_channels", reason))
            return
        earlier = self._channels.pop(message.topic, None)
        if earlier is not None:  # Phoenix closes a topic's earlier join for the new one
            self._hub.unsubscribe(earlier.subscription)
        try:
            joined = join(message.topic, message.payload, self.principal, self._projector.state)
            await self._hub.prepare(joined.topic)
            # Checked again: the state may have moved on while the telemetry tail started.
            joined = join(message.topic, message.payload, self.principal, self._projector.state)
        except ChannelRefusal as refusal:
            self._refuse(message, refusal)
            return
        except Exception:
            logger.exception("joining %r failed", message.topic)
            self._refuse(message, ChannelRefusal("internal_error", "join crashed"))
            return
        if self._closing is not None:  # closed while the join waited for the telemetry tail
            return
        subscription = Subscription(joined.topic, self, joined.event_filter)
        self._hub.subscribe(subscription)
        self._channels[message.topic] = Channel(joined.topic, message.join_ref, subscription)
        self._reply(message, "ok", _encode(joined.response))
        for push in self._hub.after_join(joined.topic):
            self.deliver([self.wire.encode(message.topic, push.event, push.payload, message.join_ref)])

    def _leave(self, channel: Channel, message: Message) -> None:
        del self._channels[message.topic]
        self._hub.unsubscribe(channel.subscription)
        self._reply(message, "ok")
        self.deliver([self.wire.encode(message.topic, CLOSE, EMPTY_OBJECT, channel.join_ref, channel.join_ref)])

    def _client_event(self, channel: Channel, message: Message) -> None:
        subscription = channel.subscription
        try:
            subscription.event_filter, answer = client_event(
                channel.topic, message.event, message.payload, subscription.event_filter
            )
        except ChannelRefusal as refusal:
            self._refuse(message, refusal)
            return
        self._reply(message, "ok", _encode(answer))

    def _reply(
        self, message: Message, status: str, response: bytes = EMPTY_OBJECT, without_join_ref: bool = False
    ) -> None:
        """`phx_reply` to `message`, under its refs (Phoenix answers heartbeats and messages
        for unjoined topics without the join ref)."""
        join_ref = None if without_join_ref else message.join_ref
        payload = reply_payload(status, response)
        self.deliver([self.wire.encode(message.topic, REPLY, payload, join_ref, message.ref)])

    def _refuse(self, message: Message, refusal: ChannelRefusal, without_join_ref: bool = False) -> None:
        response = _encode(JoinRefusal(reason=refusal.reason, code=refusal.code))
        self._reply(message, "error", response, without_join_ref)
