"""The live hub of one API process: it tails the logs and fans pushes out to its own connections.

Every API process runs one hub for its WebSockets and telemetry streams (subscribers);
no message passes between processes, since every process reads the same logs:

- resource events come from the projector (a listener called after each applied event),
  so a channel sees a change once this process's state has it;
- telemetry is read from the end of `crucible.telemetry` (every partition) while some
  subscriber wants telemetry, and not at all otherwise. A record's key is its
  experiment's id: a record no subscriber wants is skipped without being decoded.

A push to a topic is encoded once per wire format (Phoenix v2, v1, SSE) and per event
filter, then the same bytes go to every subscriber of that kind. Delivery never waits:
a subscriber that cannot take more (see `live_send_queue_bytes`) disconnects itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from schemas.live import SystemStats
from schemas.resources import AnyResourceEvent, ApiKeyRevoked, ExperimentEvent, SessionEnded
from service.core import metrics
from service.core.errors import ApiError
from service.live.channels import ALL_EXPERIMENTS, DASHBOARD, EXPERIMENT, TELEMETRY, EventFilter, Topic
from service.live.dashboard_feed import SystemSampler, experiment_summary
from service.live.events import stored_events
from service.live.experiment_feed import ExperimentFeed, Push, experiment_topic
from service.log.interface import TELEMETRY_TOPIC, EventLog, LogReader, LogWentBack, StoredRecord
from service.resources.credentials import Principal
from service.resources.fold import Resources
from service.resources.projector import Projector
from service.settings import Settings

logger = logging.getLogger(__name__)

READ_BATCH = 64  # records; one can hold a whole 10,000-event batch
READ_TIMEOUT_SECONDS = 0.5
# The telemetry tail stops once nobody has wanted telemetry for this long (a page
# reload leaves and joins again: keep the reader for it).
TAIL_LINGER_SECONDS = 30.0
# Several experiment changes in a row make one experiment_summary.
SUMMARY_DELAY_SECONDS = 0.1
# Pieces a fan-out writes at once: a subscriber's queue is checked between them, so a
# large batch cannot land whole in the memory of a subscriber that fell behind.
CHUNK_BYTES = 64 * 1024
TELEMETRY_EVENT = "event"
# WebSocket close codes (RFC 6455) of the ends the hub decides.
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TELEMETRY_ALL_TOPIC = f"{TELEMETRY}:{ALL_EXPERIMENTS}"
KEY_REVOKED = "the API key was revoked"
SESSION_ENDED = "the session ended"
SESSION_EXPIRED = "the session expired"

_encode = msgspec.json.Encoder().encode
Ref = str | int | None


def credentials_lost(principal: Principal, state: Resources) -> str | None:
    """Why a connection's credentials no longer hold (its key revoked, its session ended), or None."""
    key = state.api_keys.get(principal.key.id)
    if key is None or key.revoked_at is not None:
        return KEY_REVOKED
    if principal.session_id is not None and principal.session_id in state.ended_sessions:
        return SESSION_ENDED
    return None


class Wire(Protocol):
    """How a subscriber's connection frames a message (service/live/phoenix.py, service/api/stream.py)."""

    def encode(self, topic: str, event: str, payload: bytes, join_ref: Ref = None, ref: Ref = None) -> bytes: ...


class Subscriber(Protocol):
    """A connection of this process that receives pushes."""

    @property
    def wire(self) -> Wire: ...

    @property
    def principal(self) -> Principal: ...

    @property
    def transport_name(self) -> str:
        """The label of its metrics: websocket or sse."""

    def deliver(self, chunks: Sequence[bytes]) -> None:
        """Send these bytes, or disconnect if the connection has too much waiting already."""

    def end(self, code: int, reason: str) -> None:
        """Close the connection (`code`: the WebSocket close code, RFC 6455)."""


@dataclass(eq=False, slots=True)
class Subscription:
    """A subscriber's interest in one topic; a telemetry filter may change while it lasts."""

    topic: Topic
    subscriber: Subscriber
    event_filter: EventFilter | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One push to a topic; `payload` is JSON, `name` the telemetry event name filters look at."""

    event: str
    payload: bytes
    name: str = ""


def message_of(push: Push) -> Message:
    event, payload = push
    return Message(event, _encode(payload))


def chunked(parts: Sequence[bytes], size: int = CHUNK_BYTES) -> list[bytes]:
    """`parts` joined into pieces of about `size` bytes (a larger part stays whole)."""
    chunks: list[bytes] = []
    pending: list[bytes] = []
    pending_size = 0
    for part in parts:
        if pending and pending_size + len(part) > size:
            chunks.append(b"".join(pending))
            pending, pending_size = [], 0
        pending.append(part)
        pending_size += len(part)
    if pending:
        chunks.append(b"".join(pending))
    return chunks


class LiveHub:
    """Subscriptions by topic and the tasks that feed them; see the module docstring."""

    def __init__(self, log: EventLog, projector: Projector, settings: Settings) -> None:
        self._log = log
        self._projector = projector
        self._stats_seconds = settings.live_stats_seconds
        self._topics: dict[str, set[Subscription]] = {}
        self._feeds: dict[str, ExperimentFeed] = {}  # experiment id → its channel's feed
        self._subscribers: set[Subscriber] = set()
        self._expiries: dict[Subscriber, asyncio.TimerHandle] = {}  # sessions' sockets: closed when it expires
        self._admitted: dict[str, int] = {}  # API key id → its live connections (admit/release)
        self._tail_task: asyncio.Task[None] | None = None
        self._tail_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._summary_call: asyncio.TimerHandle | None = None
        self._last_summary: bytes | None = None
        # The summary counts every experiment: it is computed again only when an experiment
        # event was folded or the UTC day changed (100,000 experiments take ~30 ms to count).
        self._summary_cache: tuple[tuple[int, int, dt.date], bytes] | None = None
        self._sampler: SystemSampler | None = None
        self._latest_stats: tuple[float, SystemStats] | None = None

    async def start(self) -> None:
        self._sampler = SystemSampler()
        self._projector.listen(self._on_resource_event)

    async def stop(self) -> None:
        self._projector.unlisten(self._on_resource_event)
        if self._summary_call is not None:
            self._summary_call.cancel()
        for task in (self._tail_task, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- subscribers and subscriptions ---------------------------------------------------

    def admit(self, key_id: str, limit: int) -> bool:
        """Count one more live connection of the API key `key_id`, unless it has `limit` already.

        Checked and counted at once, before the connection's handshake awaits anything, so
        that connections racing in together cannot all pass; each admitted one is `release`d."""
        count = self._admitted.get(key_id, 0)
        if count >= limit:
            return False
        self._admitted[key_id] = count + 1
        return True

    def release(self, key_id: str) -> None:
        count = self._admitted.get(key_id, 0) - 1
        if count > 0:
            self._admitted[key_id] = count
        else:
            self._admitted.pop(key_id, None)

    @contextlib.contextmanager
    def admitted(self, key_id: str, limit: int) -> Iterator[None]:
        """One live connection of `key_id` while the block runs; 429 when it has `limit` open."""
        if not self.admit(key_id, limit):
            raise ApiError(
                429,
                "rate_limited",
                f"this API key has {limit} live connections open, the most it may have; close one first",
                {"connections": [f"at most {limit} per API key (live_max_connections_per_key)"]},
                headers={"Retry-After": "1"},
            )
        try:
            yield
        finally:
            self.release(key_id)

    def connect(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)
        metrics.LIVE_CONNECTIONS.labels(subscriber.transport_name).inc()
        # Its credentials were checked before the upgrade, and the key's revocation or the
        # session's end may have been folded since (while the upgrade was written): such an
        # event reached the connections of that moment, not this one.
        lost = credentials_lost(subscriber.principal, self._projector.state)
        if lost is not None:
            subscriber.end(POLICY_VIOLATION, lost)
        expires = subscriber.principal.session_expires
        if lost is None and expires is not None:
            # A session token is refused once it expires; its sockets would otherwise outlive it.
            delay = max(expires - time.time(), 0.0)
            self._expiries[subscriber] = asyncio.get_running_loop().call_later(
                delay, subscriber.end, POLICY_VIOLATION, SESSION_EXPIRED
            )

    def end_all(self) -> None:
        """Close every connection (the server is stopping)."""
        for subscriber in list(self._subscribers):
            subscriber.end(GOING_AWAY, "the server is stopping")

    def disconnect(self, subscriber: Subscriber) -> None:
        expiry = self._expiries.pop(subscriber, None)
        if expiry is not None:
            expiry.cancel()
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            metrics.LIVE_CONNECTIONS.labels(subscriber.transport_name).dec()

    async def prepare(self, topic: Topic) -> None:
        """Start what a subscription to `topic` needs (the telemetry tail). Await it, then
        check the join, `subscribe` and answer without awaiting in between: the answer then
        tells the state the first push follows from, and nothing appended after it is missed."""
        if topic.kind in (EXPERIMENT, TELEMETRY):
            await self._ensure_tailing()

    def subscribe(self, subscription: Subscription) -> None:
        """Deliver the topic's pushes to the subscription from now on (after `prepare`)."""
        topic = subscription.topic
        self._topics.setdefault(topic.name, set()).add(subscription)
        if topic.kind == EXPERIMENT and topic.argument not in self._feeds:
            self._feeds[topic.argument] = ExperimentFeed(topic.argument, self._projector.state)
        if topic.kind == DASHBOARD and self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_dashboards(), name="live-dashboards")

    def unsubscribe(self, subscription: Subscription) -> None:
        topic = subscription.topic
        subscriptions = self._topics.get(topic.name)
        if subscriptions is None:
            return
        subscriptions.discard(subscription)
        if not subscriptions:
            del self._topics[topic.name]
            if topic.kind == EXPERIMENT:
                self._feeds.pop(topic.argument, None)

    def after_join(self, topic: Topic) -> list[Message]:
        """What a channel gets right after its join is answered (a dashboard: the current figures)."""
        if topic.kind != DASHBOARD:
            return []
        return [Message("system_stats", _encode(self._system_stats())), Message("experiment_summary", self._summary())]

    # -- fan-out -------------------------------------------------------------------------

    def publish(self, topic: str, messages: Sequence[Message]) -> None:
        """Deliver `messages` to every subscription of `topic` (filtered by each one's event filter)."""
        subscriptions = self._topics.get(topic)
        if not subscriptions or not messages:
            return
        framed: dict[Wire, list[bytes]] = {}
        chunks_by_kind: dict[tuple[Wire, EventFilter | None], list[bytes]] = {}
        for subscription in list(subscriptions):
            subscriber = subscription.subscriber
            wire, event_filter = subscriber.wire, subscription.event_filter
            chunks = chunks_by_kind.get((wire, event_filter))
            if chunks is None:
                frames = framed.get(wire)
                if frames is None:
                    frames = framed[wire] = [wire.encode(topic, m.event, m.payload) for m in messages]
                if event_filter is not None:
                    frames = [f for f, m in zip(frames, messages, strict=True) if event_filter.matches(m.name)]
                chunks = chunks_by_kind[(wire, event_filter)] = chunked(frames)
            if chunks:
                subscriber.deliver(chunks)

    # -- resource events -----------------------------------------------------------------

    def _on_resource_event(self, event: AnyResourceEvent) -> None:
        if isinstance(event, ApiKeyRevoked | SessionEnded):
            self._revoke(event)
            return
        experiment_id = getattr(event, "experiment_id", None)
        if not isinstance(experiment_id, str):
            return
        feed = self._feeds.get(experiment_id)
        if feed is not None:
            pushes = feed.resource_event(event, self._projector.state)
            self.publish(experiment_topic(experiment_id), [message_of(p) for p in pushes])
        if self._summary_call is None and self._dashboard_topics():
            loop = asyncio.get_running_loop()
            self._summary_call = loop.call_later(SUMMARY_DELAY_SECONDS, self._summary_changed)

    def _revoke(self, event: ApiKeyRevoked | SessionEnded) -> None:
        for subscriber in list(self._subscribers):
            principal = subscriber.principal
            if isinstance(event, ApiKeyRevoked) and principal.key.id == event.key_id:
                subscriber.end(POLICY_VIOLATION, KEY_REVOKED)
            elif isinstance(event, SessionEnded) and principal.session_id == event.session_id:
                subscriber.end(POLICY_VIOLATION, SESSION_ENDED)

    # -- telemetry -----------------------------------------------------------------------

    def _wants_telemetry(self) -> bool:
        return bool(self._feeds) or any(name.startswith(TELEMETRY + ":") for name in self._topics)

    async def _ensure_tailing(self) -> None:
        if self._tail_task is not None:
            return
        async with self._tail_lock:
            if self._tail_task is None:
                reader = await self._log.tail(TELEMETRY_TOPIC)
                task = asyncio.create_task(self._tail(reader), name="live-telemetry")
                task.add_done_callback(self._tail_ended)
                self._tail_task = task

    def _tail_ended(self, task: asyncio.Task[None]) -> None:
        """A tail that stopped (idle, cancelled, or failed) is forgotten, so the next join starts one."""
        if self._tail_task is task:
            self._tail_task = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("the live telemetry tail stopped: %r; the next join starts another", exc)

    async def _tail(self, reader: LogReader) -> None:
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        try:
            while True:
                try:
                    records = await reader.read(timeout=READ_TIMEOUT_SECONDS, max_records=READ_BATCH)
                except LogWentBack as exc:
                    # The topic was made anew: live channels only show what arrives from
                    # now on, so a tail from the new log's end serves them as well.
                    logger.warning("%s went back (%s); following it from its end", TELEMETRY_TOPIC, exc)
                    await reader.stop()
                    reader = await self._log.tail(TELEMETRY_TOPIC)
                    continue
                except Exception:
                    logger.exception("reading %s for live channels failed; retrying", TELEMETRY_TOPIC)
                    await asyncio.sleep(1.0)
                    continue
                for record in records:
                    try:
                        self._on_telemetry_record(record)
                    except Exception:  # one record the tail cannot read must not silence every channel
                        logger.exception("live channels skip telemetry record %d:%d", record.partition, record.offset)
                if self._wants_telemetry():
                    idle_since = None
                elif idle_since is None:
                    idle_since = loop.time()
                elif loop.time() - idle_since > TAIL_LINGER_SECONDS:
                    self._tail_task = None  # at once: a subscribe from now on starts a new tail
                    return
        finally:
            await reader.stop()

    def _on_telemetry_record(self, record: StoredRecord) -> None:
        experiment_id = record.key.decode("utf-8", "replace")
        topics = [t for t in (TELEMETRY_ALL_TOPIC, f"{TELEMETRY}:{experiment_id}") if t in self._topics]
        feed = self._feeds.get(experiment_id)
        if not topics and feed is None:
            metrics.LIVE_TELEMETRY_RECORDS.labels("skipped").inc()
            return
        metrics.LIVE_TELEMETRY_RECORDS.labels("decoded").inc()
        try:
            events = stored_events(record)
        except (msgspec.DecodeError, ValueError) as exc:
            logger.warning("live channels skip telemetry record %d:%d: %s", record.partition, record.offset, exc)
            return
        if topics:
            messages = [Message(TELEMETRY_EVENT, _encode(e), ".".join(e.event_name)) for e in events]
            for topic in topics:
                self.publish(topic, messages)
        if feed is not None:
            self.publish(experiment_topic(experiment_id), [message_of(p) for p in feed.telemetry(events)])

    # -- dashboards ----------------------------------------------------------------------

    def _dashboard_topics(self) -> list[str]:
        return [name for name in self._topics if name.startswith(DASHBOARD + ":")]

    async def _tick_dashboards(self) -> None:
        while True:
            await asyncio.sleep(self._stats_seconds)
            topics = self._dashboard_topics()
            if not topics:
                self._ticker = None
                return
            self._last_summary = summary = self._summary()
            stats = Message("system_stats", _encode(self._system_stats(fresh=True)))
            messages = [stats, Message("experiment_summary", summary)]
            for topic in topics:
                self.publish(topic, messages)

    def _summary_changed(self) -> None:
        """experiment_summary to every dashboard, when the numbers differ from the last ones sent to all."""
        self._summary_call = None
        summary = self._summary()
        if summary != self._last_summary:
            for topic in self._dashboard_topics():
                self.publish(topic, [Message("experiment_summary", summary)])
            self._last_summary = summary

    def _summary(self) -> bytes:
        state = self._projector.state
        now = dt.datetime.now(dt.UTC)
        key = (id(state), state.version(ExperimentEvent), now.date())
        if self._summary_cache is None or self._summary_cache[0] != key:
            self._summary_cache = (key, _encode(experiment_summary(state, now)))
        return self._summary_cache[1]

    def _system_stats(self, fresh: bool = False) -> SystemStats:
        """A new sample, or the latest one if a dashboard tick took it recently (psutil's CPU
        figure is the average since the previous sample: two close together say little)."""
        assert self._sampler is not None, "the hub is not started"
        now = asyncio.get_running_loop().time()
        if fresh or self._latest_stats is None or now - self._latest_stats[0] > self._stats_seconds:
            self._latest_stats = (now, self._sampler.sample())
        return self._latest_stats[1]
