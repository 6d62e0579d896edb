"""When each watched run was last heard from, told by the `crucible.telemetry` records read as they are appended.

A run is heard from when a telemetry event naming it (metadata `run_id`) reaches the
log; the time is the log's time of its record. Only the watched runs count (running or
timed out, service/resources/run_silence.py), grouped by experiment: a record's key is
its experiment, so a record of an experiment without watched runs costs nothing.

Reading every record would cost ~0.5 µs per event (a decode of each event's metadata),
about a third of ingest's own cost, so listening works in rounds (one per sweep of the
watch): once every watched run of an experiment was heard in the round, its further
records are skipped unread, and a run heard during a round counts as heard at the
round's end: a time-out comes at most one round later for it, never early. A record that
must be read is searched for each run still unheard (`"run_id":"<id>"`: v2 records are
msgspec's compact JSON and run ids are plain `[A-Za-z0-9_.-]`, see run_events.SAFE_ID;
an event whose `data` names the run counts too), or decoded when more runs are unheard
than searching beats decoding.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping

import msgspec

from service.log.interface import StoredRecord
from service.warehouse.writer import record_shape

logger = logging.getLogger(__name__)

RUN_ID_KEY = b'"run_id":"'
# A search that misses reads the whole record (~0.09 µs per event, measured); decoding
# every event's metadata costs ~0.5 µs per event: beyond this many runs, decode.
SEARCH_AT_MOST = 4


class _Metadata(msgspec.Struct, gc=False):
    run_id: str = ""


class _Event(msgspec.Struct, gc=False):
    metadata: _Metadata = msgspec.field(default_factory=_Metadata)


class _Runs(msgspec.Struct, gc=False):
    """Of a v2 record (schemas.telemetry.TelemetryRecord), only each event's run: msgspec skips the rest."""

    events: list[_Event] = []


_runs_decoder = msgspec.json.Decoder(_Runs)


class RunHeartbeats:
    """What one listener heard, up to `until` (every record appended before it has been read;
    None until the first read)."""

    def __init__(self) -> None:
        self.until: dt.datetime | None = None
        self._last: dict[str, dt.datetime] = {}  # run id → when it was last heard, as of the last round
        self._round: dict[str, dt.datetime] = {}  # run id → its first record in this round
        self._watched: dict[str, dict[str, bytes]] = {}  # experiment id → its runs → the bytes naming each
        # Run id → since when it is listened for. Its records before were not read, so until it
        # is heard it counts as heard then: a verdict may come late, never early.
        self._began: dict[str, dt.datetime] = {}

    @property
    def heard(self) -> Mapping[str, dt.datetime]:
        """When each watched run was last heard, as of the last round."""
        return self._last

    @property
    def began(self) -> Mapping[str, dt.datetime]:
        """Since when each watched run is listened for."""
        return self._began

    def watch(self, watched: Mapping[str, Iterable[str]], since: dt.datetime) -> None:
        """Listen for these runs (experiment id → run ids), those not listened for yet from `since`;
        forget the others."""
        names, self._watched = self._watched, {}
        began, self._began = self._began, {}
        last, self._last = self._last, {}
        for experiment_id, run_ids in watched.items():
            known = names.get(experiment_id, {})
            runs = self._watched[experiment_id] = {}
            for run_id in run_ids:
                runs[run_id] = known.get(run_id) or _name(run_id)
                self._began[run_id] = began.get(run_id, since)
                if run_id in last:
                    self._last[run_id] = last[run_id]

    def read_up_to(self, at: dt.datetime) -> None:
        """Every record appended before `at` has been heard."""
        if self.until is None or at > self.until:
            self.until = at

    def hear(self, record: StoredRecord) -> None:
        runs = self._watched.get(record.key.decode("utf-8", "replace"))
        if not runs:
            return
        unheard = {run_id: name for run_id, name in runs.items() if run_id not in self._round}
        if not unheard:
            return
        legacy, _ = record_shape(record)
        if legacy:  # format v1, only in logs older than this version: the tail starts at the end
            return
        try:
            named = _named(record.value, unheard)
        except msgspec.DecodeError as exc:
            logger.warning("run watch skips telemetry record %d:%d: %s", record.partition, record.offset, exc)
            return
        at = dt.datetime.fromtimestamp(record.timestamp_ms / 1000, dt.UTC)
        for run_id in named:
            self._round.setdefault(run_id, at)

    def close_round(self) -> None:
        """End the round: a run heard during it counts as heard at its end, `until`."""
        assert self.until is not None, "nothing read yet"
        for run_id, first in self._round.items():
            self._last[run_id] = max(first, self.until)
        self._round.clear()


def _name(run_id: str) -> bytes:
    """How a v2 record names the run: the metadata entry, as msgspec writes it."""
    return RUN_ID_KEY + run_id.encode() + b'"'


def _named(value: bytes, unheard: Mapping[str, bytes]) -> list[str]:
    """Which of the `unheard` runs (id → the bytes naming it) the record's events name."""
    if len(unheard) <= SEARCH_AT_MOST:
        return [run_id for run_id, name in unheard.items() if name in value]
    named = {event.metadata.run_id for event in _runs_decoder.decode(value).events}
    return [run_id for run_id in unheard if run_id in named]
