"""Channels of the WebSocket API: topic names, who may join which, and the client events each takes.

| topic | who may join | the join answers | client events |
|---|---|---|---|
| `experiment:<id>` | read scope; the experiment exists | its status | none |
| `telemetry:<experiment id>`, `telemetry:all` | read scope | the event types it receives | `subscribe`, `unsubscribe` |
| `dashboard:<key id>` | read scope; that key (or its session), or an admin key | `{}` | none |

What each channel pushes is in service/live/experiment_feed.py, service/live/dashboard_feed.py
and the live hub (service/live/hub.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from schemas.live import EventTypes, Filter
from service.live.experiment_feed import status_of
from service.resources.credentials import Principal
from service.resources.fold import Resources

EXPERIMENT = "experiment"
TELEMETRY = "telemetry"
DASHBOARD = "dashboard"
TOPIC_KINDS = (EXPERIMENT, TELEMETRY, DASHBOARD)
ALL_EXPERIMENTS = "all"  # telemetry:all
MAX_TOPIC_ARGUMENT = 256
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
MAX_EVENT_TYPES = 100  # per telemetry channel, summed over its join and subscribes (EventTypes caps one message)


class ChannelRefusal(Exception):
    """A join or client event the channel refuses: answered with an error reply, nothing else."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Topic:
    kind: str
    argument: str

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.argument}"


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Telemetry event types a subscription receives: a name equal to a type or ending with `.` + it."""

    types: frozenset[str]
    suffixes: tuple[str, ...]

    @classmethod
    def of(cls, types: frozenset[str]) -> EventFilter | None:
        """The filter of these types; None (every event) when there are none."""
        if not types:
            return None
        return cls(types, tuple("." + t for t in sorted(types)))

    def matches(self, name: str) -> bool:
        return name in self.types or name.endswith(self.suffixes)

    def answer(self) -> Filter:
        return Filter(event_types=sorted(self.types))


EVERY_EVENT = Filter(event_types=None)


@dataclass(frozen=True, slots=True)
class Joined:
    """An accepted join: the reply's response, and the telemetry filter it starts with."""

    topic: Topic
    response: msgspec.Struct | dict[str, Any]
    event_filter: EventFilter | None = None


def parse_topic(name: str) -> Topic:
    """`kind:argument`; an unknown kind is Phoenix's "unmatched topic", a bad argument "invalid_topic"."""
    kind, separator, argument = name.partition(":")
    if not separator or kind not in TOPIC_KINDS:
        raise ChannelRefusal("unmatched_topic", "unmatched topic")
    if not argument or len(argument) > MAX_TOPIC_ARGUMENT or not argument.isprintable() or argument != argument.strip():
        rule = f"an id of 1 to {MAX_TOPIC_ARGUMENT} printable characters"
        raise ChannelRefusal("invalid_topic", f"{kind} topics are {kind}:<id> with {rule}")
    return Topic(kind, argument)


def join(name: str, params: Any, principal: Principal, state: Resources) -> Joined:
    """Check a join of topic `name` by `principal`; raise ChannelRefusal when it is not allowed."""
    topic = parse_topic(name)
    if not principal.allows("read"):
        raise ChannelRefusal("forbidden", f"joining {topic.kind} channels needs the 'read' scope")
    if topic.kind == EXPERIMENT:
        experiment = state.experiments.get(topic.argument)
        if experiment is None:
            raise ChannelRefusal("not_found", f"experiment {topic.argument} not found")
        return Joined(topic, status_of(experiment))
    if topic.kind == TELEMETRY:
        event_filter = EventFilter.of(event_types(params))
        return Joined(topic, event_filter.answer() if event_filter else EVERY_EVENT, event_filter)
    if topic.argument != principal.key.id and not principal.allows("admin"):
        raise ChannelRefusal("forbidden", f"this key may join only its own dashboard, dashboard:{principal.key.id}")
    return Joined(topic, {})


def client_event(
    topic: Topic, event: str, payload: Any, current: EventFilter | None
) -> tuple[EventFilter | None, Filter]:
    """A client event on a joined channel: the telemetry filter it leaves, and the reply's response.

    `subscribe` adds event types, `unsubscribe` removes them; with none left the channel
    receives every event again (API.md: no subscription means all events)."""
    if topic.kind != TELEMETRY or event not in (SUBSCRIBE, UNSUBSCRIBE):
        takes = f"take {SUBSCRIBE!r} and {UNSUBSCRIBE!r}" if topic.kind == TELEMETRY else "take no client events"
        raise ChannelRefusal("unknown_event", f"unknown event {event!r}: {topic.kind} channels {takes}")
    types = event_types(payload)
    now = current.types if current else frozenset()
    wanted = now | types if event == SUBSCRIBE else now - types
    if len(wanted) > MAX_EVENT_TYPES:  # each is matched against every event the channel sees
        raise ChannelRefusal(
            "too_many_event_types", f"a channel subscribes to at most {MAX_EVENT_TYPES} event types at once"
        )
    changed = EventFilter.of(wanted)
    return changed, changed.answer() if changed else EVERY_EVENT


def event_types(payload: Any) -> frozenset[str]:
    """The `event_types` of a join, subscribe or unsubscribe payload."""
    try:
        return frozenset(msgspec.convert(payload or {}, EventTypes).event_types)
    except msgspec.ValidationError as exc:
        raise ChannelRefusal("validation_error", f"bad payload: {exc}") from None
