"""The warehouse: ClickHouse through clickhouse-connect, a server over HTTP or chDB in-process.

chDB has no async client and a client serialises its calls, so every call runs in a
thread: queries on a small pool of clients, inserts on a client of their own, so a
long insert never holds up a dashboard's query. Queries are the `.sql` files of
`queries/`, always with server-side parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

import queries
from service.core import metrics
from service.core.thread_priority import lower_this_thread
from service.settings import Settings
from service.warehouse.insert_load import InsertLoad
from service.warehouse.shared_reads import SharedReads

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Every query answers in JSON lines with ISO 8601 UTC times, decoded by msgspec.
QUERY_SETTINGS = {"date_time_output_format": "iso", "output_format_json_quote_64bit_integers": 0}
# Rows arrive as the producers' RFC 3339 timestamps; an event's free `data` object is
# stored as its JSON text.
# Parsing on the insert's own thread, not in parallel: on 2 cores the parallel parser's
# threads cost more than they saved (end to end 183k events/s against 169k-171k, two ingest
# workers in both).
INSERT_SETTINGS = {
    "date_time_input_format": "best_effort",
    "input_format_json_read_objects_as_strings": 1,
    "input_format_parallel_parsing": 0,
}


# Queries yield to ingest while the writer spent at least BUSY_SHARE of the last
# BUSY_SECONDS inserting (it inserts every writer_flush_seconds, 0.5 s, under load). At half
# load (44k events/s on 2 cores) it inserted 66-99 % of the time (10th to 90th percentile);
# after a sign-in's one resource event, 0.3 %.
BUSY_SECONDS = 2.0
BUSY_SHARE = 0.25


class WarehouseError(Exception):
    """The warehouse refused or failed a call."""


# DateTime64's range. No stored time lies outside it, so a bound beyond it selects what the
# range's end selects; ClickHouse refuses such a parameter instead (and strftime does not pad
# years below 1000), which turned a filter like `after=0744-07-14` into a 503.
SQL_DATETIME_MIN = dt.datetime(1900, 1, 1)
SQL_DATETIME_MAX = dt.datetime(2299, 12, 31, 23, 59, 59, 999999)


def sql_datetime(value: dt.datetime) -> str:
    """A datetime as a DateTime64(6) parameter, in UTC whatever zone it came in, within DateTime64's range."""
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # year 1 or 9999 moved past the end of datetime by its offset
            value = SQL_DATETIME_MIN if value.year < SQL_DATETIME_MIN.year else SQL_DATETIME_MAX
    value = min(max(value, SQL_DATETIME_MIN), SQL_DATETIME_MAX)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


class Warehouse:
    """Queries and inserts against the configured ClickHouse."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._query_clients: queue.SimpleQueue[Client] = queue.SimpleQueue()
        self._all_clients: list[Client] = []
        # The embedded warehouse's queries and inserts run below the API's priority (service/core/thread_priority.py).
        nice = (settings.warehouse_nice if settings.embedded_warehouse else 0,)
        query_nice = (settings.query_nice if settings.embedded_warehouse else 0,)
        # Queries made while the writer inserts run on threads below the inserts; the others
        # at the API's own priority (a thread cannot raise its priority again once lowered).
        self._busy_query_pool = ThreadPoolExecutor(
            settings.query_threads,
            thread_name_prefix="warehouse-query-busy",
            initializer=lower_this_thread,
            initargs=query_nice,
        )
        self._query_pool = ThreadPoolExecutor(settings.query_threads, thread_name_prefix="warehouse-query")
        self._insert_pool = ThreadPoolExecutor(
            1, thread_name_prefix="warehouse-insert", initializer=lower_this_thread, initargs=nice
        )
        self._insert_client: Client | None = None
        self._lock = threading.Lock()
        self.shared_reads = SharedReads()
        self.insert_load = InsertLoad(BUSY_SECONDS)
        self._busy_query_settings = QUERY_SETTINGS
        if settings.embedded_warehouse and settings.busy_query_threads:
            self._busy_query_settings = {**QUERY_SETTINGS, "max_threads": settings.busy_query_threads}

    @property
    def embedded(self) -> bool:
        return self._settings.embedded_warehouse

    @property
    def chdb_path(self) -> Path:
        """Where chDB keeps the embedded warehouse."""
        return Path(self._settings.data_dir) / "warehouse"

    def _new_client(self) -> Client:
        if self._settings.clickhouse is None:
            self.chdb_path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=str(self.chdb_path))
        else:
            url = urlparse(self._settings.clickhouse)
            client = clickhouse_connect.get_client(
                interface=url.scheme,
                host=url.hostname,
                port=url.port or (8443 if url.scheme == "https" else 8123),
                username=unquote(url.username or "default"),
                password=unquote(url.password or ""),
                database=url.path.strip("/") or "default",
                autogenerate_session_id=False,
            )
        with self._lock:
            self._all_clients.append(client)
        return client

    async def start(self) -> None:
        """Connect the insert client and the query clients."""
        loop = asyncio.get_running_loop()
        self._insert_client = await loop.run_in_executor(self._insert_pool, self._new_client)
        for _ in range(self._settings.query_threads):
            self._query_clients.put(await loop.run_in_executor(self._query_pool, self._new_client))

    async def stop(self) -> None:
        self._query_pool.shutdown(wait=True, cancel_futures=True)
        self._busy_query_pool.shutdown(wait=True, cancel_futures=True)
        self._insert_pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for client in self._all_clients:
                try:
                    client.close()
                except Exception:  # closing is best effort at shutdown
                    logger.debug("closing a warehouse client failed", exc_info=True)
            self._all_clients.clear()

    @contextlib.contextmanager
    def dedicated_client(self) -> Iterator[Client]:
        """A client of its own for one long call (an export's stream), closed after it.

        Blocking: call it on a worker thread. A stream holds its client until it ends,
        so it never takes one of the query clients dashboards are waiting for.
        """
        client = self._new_client()
        try:
            yield client
        finally:
            with self._lock:
                if client in self._all_clients:
                    self._all_clients.remove(client)
            client.close()

    async def _with_query_client(self, work: Callable[[Client], T], busy: bool = False) -> T:
        def run() -> T:
            client = self._query_clients.get()
            try:
                return work(client)
            finally:
                self._query_clients.put(client)

        pool = self._busy_query_pool if busy else self._query_pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, run)
        except WarehouseError:
            raise
        except Exception as exc:
            raise WarehouseError(str(exc)) from exc

    async def query(self, name: str, parameters: dict[str, Any] | None = None, shared: bool = False) -> bytes:
        """Run `queries/<name>.sql`; the rows as JSON lines. With `shared`, a copy of a
        query already in flight waits for its answer instead of running again
        (service/warehouse/shared_reads.py): for reads dashboards poll."""
        sql, parameters = queries.load(name), parameters or {}

        def run() -> Awaitable[bytes]:
            busy = self.busy()
            if busy:
                metrics.YIELDING_QUERIES.inc()
            settings = self.query_settings(busy)
            return self._with_query_client(
                lambda client: client.raw_query(sql, parameters=parameters, fmt="JSONEachRow", settings=settings),
                busy,
            )

        if shared:
            return await self.shared_reads.read(name, parameters, run)
        return await run()

    def busy(self) -> bool:
        """Whether the writer is under load: it spent BUSY_SHARE of the last BUSY_SECONDS
        inserting. Then a query keeps to `busy_query_threads` threads on a thread niced to
        query_nice: chDB's own query threads take no niceness, the query thread does, so a
        single-threaded query yields the CPU to ingest. Measured with 20 dashboards at half
        load: POST p99 74 against 1,412 ms and 202 -> visible p99 1.1 against 12.3 s.
        Otherwise a query uses every core (p99 by 5 minutes over 1 M values: 145 ms on one
        thread against 85 ms on two) at the API's priority, level with whatever else the
        machine runs."""
        return self.insert_load.share() >= BUSY_SHARE

    def query_settings(self, busy: bool) -> dict[str, Any]:
        """The settings a query runs with, while the writer is under load or not."""
        return self._busy_query_settings if busy else QUERY_SETTINGS

    async def command(self, sql: str) -> None:
        """Run a statement that returns nothing (a migration)."""
        await self._with_query_client(lambda client: client.command(sql))

    async def insert_rows(self, table: str, column_names: list[str], rows: list[list[Any]]) -> None:
        """Insert a few rows given as Python values (bookkeeping, not telemetry)."""
        await self._with_query_client(lambda client: client.insert(table, rows, column_names=column_names))

    async def insert_json_lines(self, table: str, body: bytes | Iterable[bytes], deduplication_token: str) -> None:
        """Insert JSONEachRow rows; the same token again inserts nothing (exactly once).

        `body` may come in pieces. chDB's client streams them into the file the
        insert reads, so the rows are never joined in memory; over HTTP they are
        joined first, because the client resends the same body when it retries.
        """
        block: bytes | Generator[bytes, None, None]
        if isinstance(body, bytes):
            block = body
        elif self.embedded:
            block = (piece for piece in body)  # the client's signature names generators
        else:
            block = b"".join(body)

        def run() -> None:
            assert self._insert_client is not None
            self._insert_client.raw_insert(
                table,
                insert_block=block,
                fmt="JSONEachRow",
                settings={**INSERT_SETTINGS, "insert_deduplication_token": deduplication_token},
            )

        inserting = self.insert_load.started()
        try:
            await asyncio.get_running_loop().run_in_executor(self._insert_pool, run)
        except Exception as exc:
            raise WarehouseError(str(exc)) from exc
        finally:
            self.insert_load.ended(inserting)

    async def ping(self) -> bool:
        try:
            return bool(await self._with_query_client(lambda client: client.ping()))
        except WarehouseError:
            return False
