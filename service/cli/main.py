"""The `crucible` command: serve, writer, migrate, keys, replay."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import msgspec
from aiohttp import web

from service import settings as settings_module
from service.app import create_app
from service.cli import log_commands
from service.cli.data_dir_lock import DataDirInUse, hold_data_dir
from service.cli.demo import DEFAULT_URL, DemoOptions, default_key, run_demo
from service.core.errors import ApiError
from service.log.interface import RESOURCES_TOPIC
from service.resources.credentials import SCOPES
from service.resources.keys import parse_rate_limits
from service.settings import Settings, SettingsError
from service.warehouse.client import Warehouse
from service.warehouse.migrations import migrate

SERVE_HELP = "run the API (and, unless --no-writer, the warehouse writer)"
WRITER_HELP = "run only the warehouse writer (health and /metrics on --port)"
MIGRATE_HELP = "apply the warehouse migrations in queries/migrations and exit"
STATUS_HELP = "where the data is: per partition, log end, writers' commits, lag, what the warehouse holds"
KEYS_HELP = "create, list or revoke API keys (works beside a running server)"
REPLAY_HELP = "print a topic of the event log as JSON lines"
DEMO_HELP = "create an experiment and simulate workers training runs against a running server"
# The settings a command that only touches the log needs.
LOG_SETTINGS = [
    "data_dir",
    "kafka",
    "kafka_partitions",
    "kafka_replication_factor",
    "kafka_idempotence",
    "kafka_request_timeout",
    "kafka_session_timeout",
    "idempotency_ttl_seconds",
    "log_level",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crucible", description="Crucible telemetry service")
    commands = parser.add_subparsers(dest="command", required=True)
    settings_module.add_arguments(commands.add_parser("serve", help=SERVE_HELP, description=SERVE_HELP))
    settings_module.add_arguments(commands.add_parser("writer", help=WRITER_HELP, description=WRITER_HELP))
    settings_module.add_arguments(
        commands.add_parser("migrate", help=MIGRATE_HELP, description=MIGRATE_HELP),
        only=["data_dir", "clickhouse", "log_level"],
    )
    keys = commands.add_parser("keys", help=KEYS_HELP, description=KEYS_HELP)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--scopes", default="read", help=f"comma-separated, of {', '.join(SCOPES)} (admin allows all); default read"
    )
    create.add_argument(
        "--rate-limits",
        default="",
        help="per-minute limits as CLASS=N[,CLASS=N] with CLASS one of read, write, ingest (events), export;"
        " unnamed classes keep the defaults 1000, 100, 10000, 10",
    )
    key_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key; every API process refuses it within a second")
    revoke.add_argument("key_id")
    for sub in key_commands.choices.values():
        settings_module.add_arguments(sub, only=LOG_SETTINGS)
    replay = commands.add_parser("replay", help=REPLAY_HELP, description=REPLAY_HELP)
    replay.add_argument("--topic", default=RESOURCES_TOPIC, help=f"topic to print (default {RESOURCES_TOPIC})")
    replay.add_argument("--from", dest="start", type=int, default=0, help="first offset to print (default 0)")
    settings_module.add_arguments(replay, only=LOG_SETTINGS)
    status = commands.add_parser("status", help=STATUS_HELP, description=STATUS_HELP)
    status.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    settings_module.add_arguments(status, only=[*LOG_SETTINGS, "clickhouse"])
    demo = commands.add_parser("demo", help=DEMO_HELP, description=DEMO_HELP)
    demo.add_argument("--url", default=os.environ.get("CRUCIBLE_URL", DEFAULT_URL), help=f"default {DEFAULT_URL}")
    demo.add_argument("--key", help="API key (default: CRUCIBLE_API_KEY, else ./data/admin.key)")
    demo.add_argument("--workers", type=int, default=3, help="simulated workers, one run each (default 3)")
    demo.add_argument("--seconds", type=float, default=120.0, help="how long the runs train (default 120)")
    return parser


GIL_SWITCH_SECONDS = 0.0005


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on Windows; the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _describe(settings: Settings) -> str:
    log = f"Kafka at {settings.kafka}" if settings.kafka else f"embedded log in {settings.data_dir}"
    warehouse = f"ClickHouse at {settings.clickhouse}" if settings.clickhouse else f"chDB in {settings.data_dir}"
    return f"{log}; {warehouse}"


def _run(settings: Settings, api: bool) -> None:
    _use_uvloop()
    # A thread that gave up the GIL (the log's committer, inserts, reads) waits up to
    # this long to win it back from a busy event loop; at the default 5 ms a durable
    # append waited tens of ms under full ingest load.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    app = create_app(settings, api=api)
    role = "API" + (" and warehouse writer" if settings.writer else "") if api else "warehouse writer"
    print(f"crucible {role} on http://{settings.host}:{settings.port} ({_describe(settings)})", flush=True)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)


async def _migrate(settings: Settings) -> list[str]:
    warehouse = Warehouse(settings)
    await warehouse.start()
    try:
        return await migrate(warehouse)
    finally:
        await warehouse.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":  # a client of a running server: no settings of its own
        return _demo(args)
    try:
        settings = settings_module.load(vars(args))
    except SettingsError as exc:
        print(f"crucible: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    held = None  # the data dir's lock, held while its file is open
    if args.command in ("serve", "writer", "migrate") and settings.embedded_warehouse:
        try:
            held = hold_data_dir(settings.data_dir)
        except DataDirInUse as exc:
            print(f"crucible: {exc}", file=sys.stderr)
            return 1
    try:
        return _dispatch(args, settings)
    finally:
        if held is not None:
            held.close()


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        _run(settings, api=True)
    elif args.command == "writer":
        _run(msgspec.structs.replace(settings, writer=True), api=False)
    elif args.command == "migrate":
        applied = asyncio.run(_migrate(settings))
        print("applied: " + (", ".join(applied) if applied else "nothing, the schema is current"))
    elif args.command == "keys":
        return _keys(args, settings)
    elif args.command == "status":
        try:
            asyncio.run(log_commands.status(settings, args.json))
        except ApiError as exc:
            print(f"crucible: {exc.message}", file=sys.stderr)
            return 1
    elif args.command == "replay":
        asyncio.run(log_commands.replay(settings, args.topic, args.start))
    return 0


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.keys_command == "create":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            limits = parse_rate_limits(args.rate_limits)
            asyncio.run(log_commands.keys_create(settings, args.name, scopes, limits))
        elif args.keys_command == "list":
            asyncio.run(log_commands.keys_list(settings))
        elif args.keys_command == "revoke":
            asyncio.run(log_commands.keys_revoke(settings, args.key_id))
    except ApiError as exc:
        print(f"crucible keys: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    key = args.key or default_key()
    if key is None:
        print("crucible demo: give --key (or CRUCIBLE_API_KEY); `crucible serve` printed one", file=sys.stderr)
        return 2
    if args.workers < 1 or args.seconds <= 0:
        print("crucible demo: --workers must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    try:
        run_demo(DemoOptions(url=args.url, key=key, workers=args.workers, seconds=args.seconds))
    except OSError as exc:  # urllib's errors are OSErrors: server down, refused key
        print(f"crucible demo: {args.url} did not take the demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
