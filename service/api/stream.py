"""GET /api/v1/telemetry/stream: live telemetry as Server-Sent Events, for curl and scripts.

The same events as the `telemetry:` WebSocket channels (the shape of
`GET /api/v1/telemetry/events`), one per SSE message:

    event: event
    data: {"id": "evt_...", "event_name": ["crucible", "model", "inference"], ...}

`filter[experiment_id]` picks one experiment (default: all), `filter[event_name]` a
comma-separated list of event types matched as the channels' `subscribe` does. A
comment line every `sse_heartbeat_seconds` keeps proxies from closing an idle stream.
A client that falls more than `live_send_queue_bytes` behind gets `event: error` and
is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

import msgspec
from aiohttp import web

from schemas.live import LiveError
from service.core import metrics
from service.core.errors import bad_parameter
from service.http.appkeys import LIVE_HUB, SETTINGS
from service.http.auth import principal_of, requires
from service.http.params import Query, takes
from service.live.channels import ALL_EXPERIMENTS, TELEMETRY, ChannelRefusal, EventFilter, Topic, parse_topic
from service.live.hub import GOING_AWAY, POLICY_VIOLATION, Subscription
from service.resources.credentials import Principal

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

FILTERS = {"experiment_id": "text", "event_name": "text"}
STREAM_QUERY = Query(filters=FILTERS)
OPENED = b": connected\n\n"  # lets curl show that the stream is open before any event
KEEP_ALIVE = b": keep-alive\n\n"
# How long a stream that fell behind has to read its error event before it is dropped.
CLOSE_TIMEOUT_SECONDS = 5.0
GONE, TOO_SLOW = 1006, 1013  # the WebSocket close codes of the same ends
# The `code` of the error event that ends a stream, from the close code of the end.
END_CODES = {GOING_AWAY: "server_stopping", POLICY_VIOLATION: "unauthorized", TOO_SLOW: "too_slow"}

_encode = msgspec.json.Encoder().encode


class ServerSentEvents:
    """The live hub's wire format for event streams: `event:` and `data:` lines."""

    def encode(self, topic: str, event: str, payload: bytes, join_ref: object = None, ref: object = None) -> bytes:
        return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


SSE = ServerSentEvents()


@routes.get("/api/v1/telemetry/stream")
@requires("read")
@takes(STREAM_QUERY)
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Telemetry events as they are accepted, as Server-Sent Events."""
    filters = STREAM_QUERY.check(request.query)
    try:
        topic = parse_topic(f"{TELEMETRY}:{filters.get('experiment_id', ALL_EXPERIMENTS)}")
    except ChannelRefusal as refusal:
        raise bad_parameter("filter[experiment_id]", refusal.reason) from None
    types = frozenset(t.strip() for t in filters.get("event_name", "").split(",") if t.strip())
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    principal = principal_of(request)
    with request.app[LIVE_HUB].admitted(principal.key.id, request.app[SETTINGS].live_max_connections_per_key):
        await response.prepare(request)
        await EventStream(request, response, principal).run(topic, EventFilter.of(types))
    return response


class EventStream:
    """One SSE client: a bounded queue of pushes and the loop that writes them."""

    wire = SSE
    transport_name = "sse"

    def __init__(self, request: web.Request, response: web.StreamResponse, principal: Principal) -> None:
        self.principal = principal
        self._request = request
        self._response = response
        self._hub = request.app[LIVE_HUB]
        settings = request.app[SETTINGS]
        self._queue_limit = settings.live_send_queue_bytes
        self._heartbeat = settings.sse_heartbeat_seconds
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._ended = False

    async def run(self, topic: Topic, event_filter: EventFilter | None) -> None:
        subscription = Subscription(topic, self, event_filter)
        self._hub.connect(self)
        try:
            await self._hub.prepare(topic)
            self._hub.subscribe(subscription)
            await self._response.write(OPENED)
            await self._write_until_ended()
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._hub.unsubscribe(subscription)
            self._hub.disconnect(self)

    async def _write_until_ended(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._heartbeat):
                    await self._wakeup.wait()
            except TimeoutError:
                await self._response.write(KEEP_ALIVE)
                continue
            self._wakeup.clear()
            while self._queue:
                chunk = self._queue.popleft()
                self._queued_bytes -= len(chunk)
                await self._response.write(chunk)
            if self._ended:
                return

    def deliver(self, chunks: Sequence[bytes]) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self.end(GONE, "the client went away")
            return
        for chunk in chunks:
            if self._ended:
                return
            if self._queued_bytes > self._queue_limit:
                self._fell_behind()
                return
            self._queue.append(chunk)
            self._queued_bytes += len(chunk)
        self._wakeup.set()

    def end(self, code: int, reason: str) -> None:
        """Stop after what is queued, with an `error` event saying why (`code`: a WebSocket close code)."""
        if self._ended:
            return
        self._ended = True
        error = LiveError(message=reason, code=END_CODES.get(code, "closed"))
        self._queue.append(SSE.encode("", "error", _encode(error)))
        self._wakeup.set()

    def _fell_behind(self) -> None:
        metrics.LIVE_SLOW_DISCONNECTS.labels(self.transport_name).inc()
        self._queue.clear()
        self._queued_bytes = 0
        self.end(TOO_SLOW, "too slow: the client did not read its events in time")
        transport = self._request.transport
        if transport is not None:  # a writer stuck on a client that reads nothing is dropped with it
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, transport.abort)
