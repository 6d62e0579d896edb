"""Settings: one typed struct, filled from flags, then `CRUCIBLE_*` variables, then defaults.

Every setting has exactly one definition here; the CLI flags and the environment
variable names are derived from it, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, get_type_hints
from urllib.parse import urlparse

import msgspec
from msgspec import Meta

from service.core.problem import split_validation_error

ENV_PREFIX = "CRUCIBLE_"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
# The longest silence a run may be allowed (here and in an experiment's config.run_stale_seconds):
# 30 days covers any evaluation or checkpoint pause, and keeps the setting a plausible time.
RUN_STALE_SECONDS_MAX = 30 * 86_400


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """What a process needs to know; see `describe()` for each one's meaning."""

    host: str = "127.0.0.1"
    port: Port = 4000
    data_dir: str = "./data"
    kafka: str | None = None
    kafka_partitions: Positive = 6
    kafka_replication_factor: Positive = 1
    kafka_idempotence: bool = True
    kafka_request_timeout: PositiveSeconds = 10.0
    kafka_session_timeout: PositiveSeconds = 6.0
    clickhouse: str | None = None
    writer: bool = True
    max_body_bytes: Positive = 16 * 1024 * 1024
    max_batch_events: Positive = 10_000
    writer_batch_rows: Positive = 100_000
    writer_flush_seconds: PositiveSeconds = 0.5
    writer_queue_batches: Positive = 2
    writer_retry_window: Positive = 100_000
    query_threads: Positive = 4
    busy_query_threads: Annotated[int, Meta(ge=0)] = 1
    ingest_workers: Annotated[int, Meta(ge=0)] = 1
    ingest_inline_bytes: Positive = 64 * 1024
    ingest_max_writer_lag_events: Positive = 300_000
    ingest_max_backpressure_seconds: Annotated[float, Meta(ge=0)] = 1.0
    merge_nice: Annotated[int, Meta(ge=0, le=19)] = 19
    memory_trim_seconds: Annotated[float, Meta(ge=0)] = 1.0
    warehouse_nice: Annotated[int, Meta(ge=0, le=19)] = 10
    query_nice: Annotated[int, Meta(ge=0, le=19)] = 19
    log_max_bytes: Annotated[int, Meta(ge=0)] = 0
    log_retention_hours: Annotated[float, Meta(ge=0)] = 168.0
    idempotency_ttl_seconds: Positive = 86_400
    log_level: str = "info"
    session_secret: str | None = None
    session_ttl_seconds: Positive = 12 * 3600
    trusted_proxies: str | None = None
    allowed_origins: str | None = None
    unauthenticated_rate_limit: Positive = 1_000
    metrics_public: bool = True
    artifact_store: str | None = None
    checkpoint_max_bytes: Positive = 10 * 1024**3
    ws_heartbeat_timeout_seconds: PositiveSeconds = 60.0
    ws_max_frame_bytes: Positive = 64 * 1024
    ws_max_channels: Positive = 100
    live_max_connections_per_key: Positive = 50
    live_send_queue_bytes: Positive = 1024 * 1024
    live_stats_seconds: PositiveSeconds = 5.0
    sse_heartbeat_seconds: PositiveSeconds = 15.0
    export_async_rows: Positive = 1_000_000
    export_jobs: Positive = 2
    export_retention_hours: Annotated[float, Meta(ge=0)] = 24.0
    run_stale_seconds: Annotated[int, Meta(ge=0, le=RUN_STALE_SECONDS_MAX)] = 300
    run_stale_check_seconds: PositiveSeconds = 5.0

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def embedded_log(self) -> bool:
        return self.kafka is None

    @property
    def embedded_warehouse(self) -> bool:
        return self.clickhouse is None


HELP: dict[str, str] = {
    "host": "address to listen on",
    "port": "port to listen on",
    "data_dir": "directory of the embedded log and warehouse, of export jobs' files, and of checkpoint files"
    " unless --artifact-store",
    "kafka": "Kafka bootstrap servers (HOST:PORT[,HOST:PORT]); unset = embedded log in the data dir",
    "kafka_partitions": "partitions of crucible.telemetry when this process creates it",
    "kafka_replication_factor": "replication factor of topics this process creates",
    "kafka_idempotence": "idempotent producer (on for Apache Kafka; brokers without InitProducerId need off)",
    "kafka_request_timeout": "seconds an append may take before the request answers 503",
    "kafka_session_timeout": "seconds a silent writer keeps its partitions before the group gives them to another",
    "clickhouse": "ClickHouse server URL (http://user:password@host:8123/database); unset = chDB in the data dir",
    "writer": "run the warehouse writer in this process (--no-writer runs the API alone)",
    "max_body_bytes": "largest ingest body accepted, in bytes (larger: 413)",
    "max_batch_events": "most events in one ingest batch (more: 422)",
    "writer_batch_rows": "rows per warehouse insert, at most",
    "writer_flush_seconds": "longest a row waits in the writer before it is inserted",
    "writer_queue_batches": "batches waiting for insert before the writer pauses its partitions",
    "writer_retry_window": "records of batches sent with an Idempotency-Key the writer remembers per partition"
    " (within idempotency_ttl_seconds), to drop a retry appended by another API process",
    "query_threads": "threads running warehouse queries",
    "busy_query_threads": "embedded warehouse: threads one query may use while the writer is under load (inserting"
    " a quarter of the last 2 s or more), so that dashboards leave the other cores to ingest (0 = no limit;"
    " otherwise queries use every core)",
    "ingest_workers": "processes that decode large ingest batches, so the event loop does not"
    " (0 = decode on the event loop); one keeps up with ~300 batches/s, more help with more cores",
    "ingest_max_writer_lag_events": "when this process's appends are more events than this ahead of what"
    " the warehouse writers committed (on Kafka: their group's commits), a batch waits for them before its append",
    "ingest_max_backpressure_seconds": "longest a batch waits for the writer; then it is appended anyway"
    " (0 = never wait)",
    "ingest_inline_bytes": "ingest bodies smaller than this are decoded on the event loop, where that"
    " costs less than handing them to a worker process",
    "log_max_bytes": "embedded log size cap in bytes; appends beyond it answer 503 (0 = no cap)",
    "log_retention_hours": "embedded log: telemetry records older than this, once written to the warehouse,"
    " are deleted (0 = keep forever)",
    "idempotency_ttl_seconds": "how long an Idempotency-Key's first answer is kept, and how long"
    " the warehouse writer drops a retry of its batch",
    "log_level": "debug, info, warning or error",
    "session_secret": "key that signs session cookies; every API replica needs the same one"
    " (unset = one kept in the data dir)",
    "session_ttl_seconds": "how long a session cookie from POST /api/v1/sessions stays valid",
    "trusted_proxies": "addresses or CIDR networks (comma-separated) of reverse proxies whose X-Forwarded-Proto,"
    " X-Forwarded-Host and X-Forwarded-For are believed: the client's scheme (a Secure session cookie over"
    " HTTPS), host (the service's own origin) and address (rate limits); unset = none, the headers are ignored",
    "allowed_origins": "origins (comma-separated http(s)://host[:port]) of pages, besides the service's own,"
    " that may make changes with the session cookie: a UI served from another port or host",
    "unauthenticated_rate_limit": "requests per minute one client address may make without valid credentials"
    " (answered 401/403) and logins it may attempt; beyond it they answer 429",
    "metrics_public": "serve /metrics without authentication (--no-metrics-public requires the read scope)",
    "artifact_store": "where checkpoint files go: a directory, or s3://bucket/prefix?endpoint=URL&region=NAME"
    " (credentials from the AWS_* variables); unset = <data dir>/artifacts",
    "memory_trim_seconds": "how often free C heap memory is handed back to the system (glibc's malloc_trim); 0 = never",
    "merge_nice": "niceness (Linux) of the embedded warehouse's merges, which nobody waits on, so that they take"
    " the CPU the API, the log and the writer leave; 0 leaves them as they are",
    "warehouse_nice": "niceness (Linux) of the embedded warehouse's inserts and queries, below the API's so"
    " that a large insert or query does not hold up ingest requests; 0 leaves them as they are",
    "query_nice": "niceness (Linux) of the embedded warehouse's query threads, below its inserts', so that"
    " polling dashboards do not hold up the writer (with busy_query_threads 1 a query runs on that thread alone);"
    " 0 leaves them as they are",
    "checkpoint_max_bytes": "largest checkpoint file accepted by an upload, in bytes (larger: 413)",
    "ws_heartbeat_timeout_seconds": "a WebSocket silent this long (no heartbeat, no message) is closed",
    "ws_max_frame_bytes": "largest message a WebSocket client may send, in bytes (larger: closed with 1009)",
    "ws_max_channels": "channels one WebSocket may have joined at once; a join over it is refused"
    " (phx_reply error, reason too_many_channels)",
    "live_max_connections_per_key": "live connections (WebSockets and telemetry streams) one API key may have"
    " open at once; more are refused with 429",
    "live_send_queue_bytes": "bytes a live connection (WebSocket or SSE) may have waiting to be sent;"
    " one that falls further behind is disconnected",
    "live_stats_seconds": "how often dashboard channels get system_stats and experiment_summary",
    "sse_heartbeat_seconds": "how often an idle telemetry stream sends a comment line to keep proxies open",
    "export_async_rows": "telemetry exports of more rows than this become background jobs (202 and a job id)",
    "export_jobs": "export jobs running at once; later ones wait, queued",
    "export_retention_hours": "finished export jobs and their files are deleted after this (0 = keep them)",
    "run_stale_seconds": "a running run with no telemetry for this many seconds is failed with error"
    " 'no telemetry for N s', and runs again once its worker reports; an experiment's config.run_stale_seconds"
    " overrides it (0 = never)",
    "run_stale_check_seconds": "how often the API process that watches runs judges them: a silent run fails"
    " at most twice this long after its limit, never before",
}


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message says which and why."""


_TYPES: dict[str, Any] = get_type_hints(Settings)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def add_arguments(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """Add a `--flag` for each setting (or those named in `only`); defaults stay unset."""
    for name in only or Settings.__struct_fields__:
        flag = "--" + name.replace("_", "-")
        help_text = f"{HELP[name]} (env {env_name(name)})"
        if _TYPES[name] is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)


def load(args: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from parsed flags and the environment, validating every value."""
    environ = os.environ if environ is None else environ
    args = args or {}
    raw: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        if args.get(name) is not None:
            raw[name] = args[name]
        elif env_name(name) in environ and environ[env_name(name)] != "":
            raw[name] = environ[env_name(name)]
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc)) from None
    _check_consistency(settings)
    return settings


def _explain(exc: msgspec.ValidationError) -> str:
    text, path = split_validation_error(exc)
    name = path.removeprefix("$.")
    if name in HELP:
        return f"invalid --{name.replace('_', '-')} / {env_name(name)}: {text} ({HELP[name]})"
    return f"invalid settings: {exc}"


def _check_consistency(settings: Settings) -> None:
    if settings.log_level not in {"debug", "info", "warning", "error"}:
        raise SettingsError(f"invalid --log-level {settings.log_level!r}: use debug, info, warning or error")
    if settings.clickhouse is not None:
        url = urlparse(settings.clickhouse)
        if url.scheme not in {"http", "https"} or not url.hostname:
            raise SettingsError(
                f"invalid --clickhouse {settings.clickhouse!r}: expected http(s)://[user:password@]host[:port][/database]"
            )
    if settings.artifact_store is not None:
        _check_artifact_store(settings.artifact_store)
    from service.core.addresses import parse_networks, parse_origins  # the parsers the requests use, so the two agree

    for name, parse in (("trusted_proxies", parse_networks), ("allowed_origins", parse_origins)):
        try:
            parse(getattr(settings, name))
        except ValueError as exc:
            raise SettingsError(f"invalid --{name.replace('_', '-')} / {env_name(name)}: {exc}") from None
    if settings.kafka is not None:
        for server in settings.kafka.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(f"invalid --kafka {settings.kafka!r}: expected HOST:PORT[,HOST:PORT...]")


def _check_artifact_store(location: str) -> None:
    scheme = urlparse(location).scheme
    if scheme == "s3":
        from service.core.s3_location import S3Location  # the store's own parser, so the two agree

        try:
            S3Location.parse(location)
        except ValueError as exc:
            raise SettingsError(f"invalid --artifact-store {location!r}: {exc}") from None
    elif scheme not in ("", "file") or not location.removeprefix("file://"):
        raise SettingsError(f"invalid --artifact-store {location!r}: expected a directory, file:///path or s3://bucket")
