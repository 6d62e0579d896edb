"""The `crucible` command: serve, writer, migrate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import msgspec
from aiohttp import web

from service import settings as settings_module
from service.app import create_app
from service.migrations import migrate
from service.settings import Settings, SettingsError
from service.warehouse import Warehouse

SERVE_HELP = "run the API (and, unless --no-writer, the warehouse writer)"
WRITER_HELP = "run only the warehouse writer (health and /metrics on --port)"
MIGRATE_HELP = "apply the warehouse migrations in queries/migrations and exit"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crucible", description="Crucible telemetry service")
    commands = parser.add_subparsers(dest="command", required=True)
    settings_module.add_arguments(commands.add_parser("serve", help=SERVE_HELP, description=SERVE_HELP))
    settings_module.add_arguments(commands.add_parser("writer", help=WRITER_HELP, description=WRITER_HELP))
    settings_module.add_arguments(
        commands.add_parser("migrate", help=MIGRATE_HELP, description=MIGRATE_HELP),
        only=["data_dir", "clickhouse", "log_level"],
    )
    return parser


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
    try:
        settings = settings_module.load(vars(args))
    except SettingsError as exc:
        print(f"crucible: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    if args.command == "serve":
        _run(settings, api=True)
    elif args.command == "writer":
        _run(msgspec.structs.replace(settings, writer=True), api=False)
    elif args.command == "migrate":
        applied = asyncio.run(_migrate(settings))
        print("applied: " + (", ".join(applied) if applied else "nothing, the schema is current"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
