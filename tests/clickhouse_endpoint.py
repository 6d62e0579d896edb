"""A ClickHouse HTTP endpoint for tests, backed by chDB: the ClickHouse engine, in its own process.

    python -m tests.clickhouse_endpoint --port PORT --path DATA_DIR

No ClickHouse server runs on these machines, and an API process in Kafka mode reads the
warehouse over HTTP (`--clickhouse http://...`, clickhouse-connect's HTTP client). This
process gives that path a real engine: every statement runs in chDB, so what the service's
SQL means, how it fails and what it returns are ClickHouse's own. This module is transport
only: it takes the statement, its `param_*` values and settings from the request, and
answers with the bytes chDB produced.

What it does, as a ClickHouse server's HTTP interface does:

- the statement from the `query` URL parameter and/or the body (GET or POST); for
  `INSERT ... FORMAT <name>` the rows follow in the body. chDB reads an insert's rows
  from a file, so the rows are written to a temporary file and the statement gets a
  `FROM INFILE` before its `FORMAT`: the one change made to a statement, found by the
  `FORMAT <name>` that ends it;
- `param_<name>` values bound by ClickHouse itself (`{name:Type}`), in ClickHouse's text form;
- `database`, `default_format` (TabSeparated otherwise), `query_id`; every other URL
  parameter is a setting, in force for that statement only (the session is SET to the
  request's settings and every other one is put back to its default);
- request bodies compressed with gzip, deflate, lz4 (frame) or zstd (`Content-Encoding`);
- the headers clickhouse-connect reads: `X-ClickHouse-Summary`, `-Query-Id`, `-Format`,
  `-Timezone` (UTC), `-Server-Display-Name`, and on failure `X-ClickHouse-Exception-Code`
  with ClickHouse's exception text as the body (status 500, 400 for a syntax error);
- `/ping` and `/` answer `Ok.`.

What it does not do: users, passwords and quotas (credentials are accepted and ignored),
replication and `ON CLUSTER`, sessions (`session_id` is ignored: every request is its
own), progress headers, compressed answers (clickhouse-connect reads plain ones), the
native TCP protocol, and concurrency: statements run one at a time, because one chDB
session serves the data directory. An answer is held in memory whole before it is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import re
import tempfile
import threading
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chdb.session
from aiohttp import web

# URL parameters that shape the HTTP exchange rather than the statement.
TRANSPORT_PARAMETERS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "wait_end_of_query",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "compress",
        "decompress",
        "client_protocol_version",
        "user",
        "password",
        "buffer_size",
    }
)
# An insert's statement ends at its format name; its rows follow on the next line.
_INSERT_FORMAT = re.compile(rb"^\s*INSERT\s+INTO\s.*?\bFORMAT\s+(\w+)[ \t]*(?:\r?\n|$)", re.IGNORECASE | re.DOTALL)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SYNTAX_ERROR = 62
SERVER_NAME = "crucible-chdb-endpoint"


@dataclass
class Statement:
    sql: str
    rows: bytes | None  # an insert's rows, as sent
    row_format: str | None


class RequestError(Exception):
    """A request this endpoint cannot take, answered as ClickHouse answers bad requests."""


def split_statement(query_parameter: str | None, body: bytes) -> Statement:
    """The statement and, for an insert, its rows: the `query` parameter comes first and
    the body continues it, as ClickHouse reads a request."""
    head = (query_parameter or "").encode()
    text = head + (b"\n" + body if head and body else body)
    found = _INSERT_FORMAT.match(text)
    if found is not None:
        return Statement(text[: found.end(1)].decode(), text[found.end() :], found.group(1).decode())
    return Statement(text.decode(), None, None)


def decompress(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        # A body may be several frames one after the other (clients compress it piece by
        # piece); lz4.frame.decompress alone returns the first frame and drops the rest.
        out = bytearray()
        rest = body
        while rest:
            frame = lz4.frame.LZ4FrameDecompressor()
            out += frame.decompress(rest)
            rest = frame.unused_data
        return bytes(out)
    if encoding == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return bytes(zstd.decompress(body))
    raise RequestError(f"unsupported Content-Encoding {encoding!r}")


class Engine:
    """One chDB session over the data directory, used by one statement at a time."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._session = chdb.session.Session(str(path))
        self._spool = path / "insert-rows"
        self._spool.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._session_value: dict[str, str] = {}  # each setting seen, as the session had it: SET's right side
        self._applied: dict[str, str] = {}  # settings this session holds at a value a request gave

    def run(
        self, statement: Statement, fmt: str, params: Mapping[str, str], settings: Mapping[str, str], database: str
    ) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            self._session.query(f"USE `{database.replace('`', '``')}`")
            self._apply(settings)
            if statement.rows is None:
                result = self._session.query(statement.sql, fmt, params=dict(params))
            else:
                result = self._insert(statement, params)
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": str(result.rows_read()),
            "result_rows": "0",
            "result_bytes": str(result.size()),
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }
        return result.bytes() or b"", summary

    def _insert(self, statement: Statement, params: Mapping[str, str]) -> Any:
        assert statement.rows is not None
        with tempfile.NamedTemporaryFile(dir=self._spool, suffix=".rows") as rows:
            rows.write(statement.rows)
            rows.flush()
            at = statement.sql.rfind(f"FORMAT {statement.row_format}")
            if at < 0:  # another spelling of the keyword: find it again, case aside
                at = statement.sql.upper().rfind("FORMAT")
            path = rows.name.replace("\\", "\\\\").replace("'", "\\'")
            sql = f"{statement.sql[:at]} FROM INFILE '{path}' {statement.sql[at:]}"
            return self._session.query(sql, params=dict(params))

    def _apply(self, settings: Mapping[str, str]) -> None:
        """Give the session exactly this request's settings, every other one at its default.

        The session keeps what was SET until the next request, so only the settings that
        differ from the last request's are SET (or put back to DEFAULT): looking a setting
        up in `system.settings` costs milliseconds in chDB, a SET a tenth of one, and the
        same few settings come with every request of a client.
        """
        for name, value in settings.items():
            self._check_setting_name(name)
            if self._applied.get(name) != value:
                self._applied.pop(name, None)  # if the SET fails, the value is unknown: set it next time
                self._session.query(f"SET {name} = {_literal(value)}")
                self._applied[name] = value
        for name in [name for name in self._applied if name not in settings]:
            del self._applied[name]
            self._session.query(f"SET {name} = {self._session_value[name]}")

    def _check_setting_name(self, name: str) -> None:
        """Refuse a setting ClickHouse does not have; remember what the session held before."""
        if name in self._session_value:
            return
        if not _SETTING_NAME.match(name):
            raise RequestError(f"invalid setting name {name!r}")
        current = self._session.query(
            "SELECT value, changed FROM system.settings WHERE name = {name:String}",
            "JSONCompactEachRow",
            params={"name": name},
        ).bytes()
        if not current:
            raise RequestError(f"Setting {name} is neither a builtin setting nor started with the prefix")
        value, changed = json.loads(current)
        self._session_value[name] = _literal(value) if changed else "DEFAULT"

    def close(self) -> None:
        self._session.close()


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def make_app(engine: Engine) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def handle(request: web.Request) -> web.StreamResponse:
        url = request.query
        if request.method == "GET" and "query" not in url:
            return await ok(request)
        query_id = url.get("query_id") or str(uuid.uuid4())
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Server-Display-Name": SERVER_NAME,
        }
        try:
            statement = split_statement(
                url.get("query"), decompress(await request.read(), request.headers.get("Content-Encoding"))
            )
            fmt = url.get("default_format", "TabSeparated")
            if statement.rows is None and (trailing := _TRAILING_FORMAT.search(statement.sql)):
                fmt = trailing.group(1)
            params = {name[len("param_") :]: value for name, value in url.items() if name.startswith("param_")}
            settings = {
                name: value
                for name, value in url.items()
                if name not in TRANSPORT_PARAMETERS and not name.startswith("param_")
            }
            body, summary = await asyncio.to_thread(
                engine.run, statement, fmt, params, settings, url.get("database", "default")
            )
        except RequestError as exc:
            message = f"Code: 115. DB::Exception: {exc}. (UNKNOWN_SETTING)\n"
            return web.Response(status=400, text=message, headers={**headers, "X-ClickHouse-Exception-Code": "115"})
        except Exception as exc:  # chDB's exception: ClickHouse's own code and text
            text = str(exc)
            code = int(found.group(1)) if (found := _ERROR_CODE.search(text)) else 1001
            status = 400 if code == SYNTAX_ERROR else 500
            headers["X-ClickHouse-Exception-Code"] = str(code)
            return web.Response(status=status, text=text.rstrip("\n") + "\n", headers=headers)
        headers["X-ClickHouse-Summary"] = json.dumps(summary)
        headers["X-ClickHouse-Format"] = fmt
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    # Bodies are decompressed here, as ClickHouse does, with each encoding's own framing.
    app = web.Application(client_max_size=1 << 31, handler_args={"auto_decompress": False})
    app.router.add_get("/ping", ok)
    app.router.add_route("*", "/", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--path", type=Path, required=True, help="chDB's data directory")
    args = parser.parse_args()
    engine = Engine(args.path)
    try:
        web.run_app(make_app(engine), host=args.host, port=args.port, print=None, access_log=None)
    finally:
        with contextlib.suppress(Exception):
            engine.close()


if __name__ == "__main__":
    main()
