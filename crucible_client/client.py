"""The client object: queues events without waiting, delivers them from its own threads."""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

from crucible_client.batcher import Announcement, Batcher, BatchingSettings, Flush
from crucible_client.checkpoints import Uploads
from crucible_client.errors import ClientClosed
from crucible_client.outbox import Outbox
from crucible_client.run import STARTED, Run
from crucible_client.sender import Reachability, Sender
from crucible_client.spool import Spool
from crucible_client.stats import ClientStats
from crucible_client.transport import Transport
from crucible_client.upload_journal import UploadJournal
from crucible_client.wire import EventName, Queued

logger = logging.getLogger("crucible_client")

URL_ENV = "CRUCIBLE_URL"
API_KEY_ENV = "CRUCIBLE_API_KEY"
SPOOL_ENV = "CRUCIBLE_SPOOL_DIR"


def default_spool_root() -> Path:
    """$CRUCIBLE_SPOOL_DIR, else the user's cache directory."""
    if os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "crucible" / "spool"


def spool_name(url: str) -> str:
    """A directory name per service, so a spool is only ever sent where it was meant to go."""
    netloc = urllib.parse.urlsplit(url).netloc.replace(":", "_")
    return f"{netloc}-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:12]}"


class Client:
    """Telemetry for workers: `Client(url, api_key)`, or CRUCIBLE_URL and CRUCIBLE_API_KEY.

    Every logging call only appends to an in-memory queue. A batcher thread makes batches
    of `batch_events` (or whatever is queued every `flush_interval` seconds) and, with
    `write_ahead` (the default), writes each one to the spool under `spool_dir` before it
    is sent: a process killed at any instant loses at most the events of the last
    `flush_interval`, and the next client that starts on the spool sends the rest.
    `spool_fsync` also fsyncs every spool write, for crashes of the machine, not only of
    the process. `connections` sender threads post batches oldest first, each with its
    own Idempotency-Key, retrying with exponential backoff and jitter. Over
    `max_memory_events` in memory (or, without write-ahead, after the server has failed
    for `spill_after` seconds), the oldest batches are left to the spool, sent later in
    order. `close()` (also at exit, and at the end of `with Client(...)`) delivers what it
    can within `close_timeout` seconds and spools the rest.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        batch_events: int = 1000,
        flush_interval: float = 0.5,
        max_memory_events: int = 100_000,
        spool_dir: str | Path | None = None,
        spill_after: float = 10.0,
        max_backoff: float = 5.0,
        timeout: float = 30.0,
        close_timeout: float = 10.0,
        max_batch_bytes: int = 8 << 20,
        connections: int = 2,
        write_ahead: bool = True,
        spool_fsync: bool = False,
    ) -> None:
        url = url or os.environ.get(URL_ENV)
        api_key = api_key or os.environ.get(API_KEY_ENV)
        if not url:
            raise ValueError(f"no service URL: pass url= or set {URL_ENV}")
        if not api_key:
            raise ValueError(f"no API key: pass api_key= or set {API_KEY_ENV}")
        if min(batch_events, max_memory_events, connections) < 1:
            raise ValueError("batch_events, max_memory_events and connections must be at least 1")
        self.url = url.rstrip("/")
        self.close_timeout = close_timeout
        self._stats = ClientStats()
        self._transport = Transport(self.url, api_key, timeout, connections + 1)  # + 1 for uploads
        root = Path(spool_dir) if spool_dir is not None else default_spool_root()
        self._spool = Spool(root / spool_name(self.url), fsync=spool_fsync)
        self._outbox = Outbox(self._spool, self._stats, write_ahead)
        self._queue: deque[Queued] = deque()
        self._announcements: deque[Announcement] = deque()
        self._flushes: deque[Flush] = deque()
        self._wake = threading.Event()
        self._batch_events = batch_events
        self._closed = False
        self._close_lock = threading.Lock()
        self._reachability = Reachability()
        self._senders = [
            Sender(self._outbox, self._transport, self._stats, self._reachability, max_backoff, f"crucible-sender-{n}")
            for n in range(connections)
        ]
        settings = BatchingSettings(batch_events, flush_interval, max_memory_events, spill_after, max_batch_bytes)
        self._batcher = Batcher(
            self._queue,
            self._announcements,
            self._flushes,
            self._wake,
            self._outbox,
            self._stats,
            settings,
            self._reachability,
        )
        self._uploads = Uploads(
            self._transport,
            self._enqueue,
            self._announce,
            self._stats,
            max_backoff,
            self._settled,
            UploadJournal(self._spool.directory, spool_fsync),
            write_ahead,
        )
        self._batcher.start()
        for sender in self._senders:
            sender.start()
        self._uploads.resume()
        atexit.register(self.close)

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """A client of CRUCIBLE_URL with CRUCIBLE_API_KEY (and CRUCIBLE_SPOOL_DIR if set)."""
        return cls(None, None, **options)

    @property
    def spool_directory(self) -> Path:
        """This process's spool directory (removed on close when nothing is left in it)."""
        return self._spool.directory

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters: accepted, rejected, spooled, retries..."""
        return self._stats.snapshot()

    def _enqueue(self, item: Queued) -> None:
        """The hot path: an append, and a wake-up of the batcher once a batch is full."""
        if self._closed:
            raise ClientClosed("the Crucible client is closed")
        queue = self._queue
        queue.append(item)
        if len(queue) >= self._batch_events and not self._wake.is_set():
            self._wake.set()

    def _announce(self, announcement: Announcement) -> None:
        """For uploads: an event encoded ahead, batched on its own under its own key."""
        if self._closed:
            raise ClientClosed("the Crucible client is closed")
        self._announcements.append(announcement)
        self._wake.set()

    def log_event(
        self,
        event_name: EventName,
        measurements: dict[str, float] | None = None,
        metadata: dict[str, str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Queue any telemetry event; `event_name` is dotted (`crucible.model.inference`) or a
        list of segments. Measurements are numbers, metadata strings, data any JSON object.

        The dicts are copied (one level: a caller may reuse them for the next event); `data`
        is encoded later, so leave what it holds unchanged."""
        self._enqueue((event_name, dict(measurements or ()), dict(metadata or ()), data, time.time()))

    def start_run(
        self,
        experiment_id: str,
        hyperparameters: dict[str, Any] | None = None,
        total_steps: int | None = None,
        run_id: str | None = None,
    ) -> Run:
        """Log `crucible.run.started` for a new run (id `run_` + 20 hex digits unless given)."""
        run = Run(self, experiment_id, total_steps, run_id)
        data = {"hyperparameters": dict(hyperparameters or ())}
        self._enqueue((STARTED, {}, run._metadata, data, time.time()))
        return run

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the server has answered for every event logged before this call
        (stored, or refused for good); False if `timeout` seconds passed first."""
        if self._closed:
            raise ClientClosed("the Crucible client is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        flush = Flush()
        self._flushes.append(flush)
        self._wake.set()
        if not flush.ready.wait(_remaining(deadline)):
            return False
        return self._outbox.wait_finished(flush.seq, _remaining(deadline))

    def _settled(self, timeout: float) -> bool:
        """For uploads: whether the events logged so far were answered (False while closed)."""
        try:
            return self.flush(timeout)
        except ClientClosed:
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is queued (waiting up to `timeout`, default `close_timeout` seconds),
        spool what is left, stop the threads. True if everything was delivered."""
        with self._close_lock:
            if self._closed:
                return True
            atexit.unregister(self.close)
            deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
            self._uploads.close(_remaining(deadline))
            delivered = self.flush(_remaining(deadline))
            self._closed = True
            self._batcher.stop()
            self._batcher.join()
            for sender in self._senders:
                sender.stop()
            for sender in self._senders:
                sender.join(_remaining(deadline))
            self._outbox.close()  # spills what is left: the next client sends it
            self._transport.close()
            if not delivered:
                logger.warning("closed before the server took everything: the rest waits in %s", self.spool_directory)
            return delivered

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
