"""Hostile input benchmark: does the server stay responsive, and is its memory bounded?

Against a running `crucible serve` (embedded default, one ingest worker process), with
the clients in this process. Phases:

1. health under attack: /healthz polled every 10 ms, first alone (baseline), then while
   rounds of 10 compression bombs (1 MiB of gzip inflating to 1 GiB, to ingest) and 10
   deeply nested bodies (5,000 levels, ~100 KiB so that an ingest worker decodes them)
   arrive at once. Target: /healthz p99 <= 50 ms under attack. The bombs must be 413s
   and the nested bodies 400s.
2. live memory: --sockets WebSockets, each joined to as many channels as the server
   allows (ws_max_channels, 100 by default; one more join is refused), every channel a
   distinct topic; the server's RSS before and once all joined. The per-key cap
   (live_max_connections_per_key, 50 by default) is left as it is: the sockets use
   several API keys, 50 sockets each.
3. nesting check cost: what a byte scan counting bracket depth outside strings would
   cost per MB of ingest body, against msgspec's decode of the same body (why the server
   relies on msgspec's recursion limit instead; see service/core/input_bounds.py).

    python benchmarks/hostile_input.py                 # ~1 min
    python benchmarks/hostile_input.py --sockets 200
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from _support import AUTH_HEADERS, RssSampler, fmt, percentiles_ms, print_table, start_server

MIB = 1024 * 1024
EVENTS = "/api/v1/telemetry/events"
POLL_SECONDS = 0.01
SOCKETS_PER_KEY = 50


def gzip_bomb(inflated: int) -> bytes:
    """gzip of `inflated` zero bytes (~1/1000 of it): 64 MiB members one after the other (RFC 1952
    allows several), so that it is built in a second rather than compressing a GiB."""
    member = gzip.compress(bytes(64 * MIB), compresslevel=9)
    return member * (inflated // (64 * MIB))


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def deep_body(depth: int, pad_to: int) -> bytes:
    event = b'{"event_name":["a"],"data":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
    body = b'{"events":[' + event + b"]}"
    return body + b" " * max(0, pad_to - len(body))


async def poll_health(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url + "/healthz") as answer:
            await answer.read()
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(POLL_SECONDS)
    return latencies


async def attack_round(session: aiohttp.ClientSession, url: str, bomb: bytes, deep: bytes) -> list[int]:
    async def post(body: bytes, headers: dict[str, str]) -> int:
        async with session.post(url + EVENTS, data=body, headers={**AUTH_HEADERS, **headers}) as answer:
            await answer.read()
            return answer.status

    gzipped = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    plain = {"Content-Type": "application/json"}
    bombs = [post(bomb, gzipped) for _ in range(10)]
    nests = [post(deep, plain) for _ in range(10)]
    return list(await asyncio.gather(*bombs, *nests))


async def health_under_attack(url: str, seconds: float) -> dict[str, Any]:
    bomb = gzip_bomb(1024 * MIB)
    deep = deep_body(5_000, 100 * 1024)
    async with aiohttp.ClientSession() as session:
        progress("health alone")
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(session, url, stop))
        await asyncio.sleep(seconds)
        stop.set()
        baseline = await poller
        stop = asyncio.Event()
        poller = asyncio.create_task(poll_health(session, url, stop))
        statuses: dict[int, int] = {}
        rounds = 0
        deadline = time.monotonic() + seconds
        progress("health under attack")
        while time.monotonic() < deadline:
            for status in await attack_round(session, url, bomb, deep):
                statuses[status] = statuses.get(status, 0) + 1
            rounds += 1
        stop.set()
        attacked = await poller
    return {
        "bomb_bytes": len(bomb),
        "deep_body_bytes": len(deep),
        "rounds": rounds,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "baseline_ms": percentiles_ms(baseline, (50, 99)),
        "attacked_ms": percentiles_ms(attacked, (50, 99)),
        "attacked_max_ms": max(attacked) * 1000 if attacked else None,
        "health_polls": len(attacked),
    }


async def make_keys(session: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    secrets = []
    for n in range(count):
        body = {"api_key": {"name": f"hostile bench {n}", "scopes": ["read"]}}
        async with session.post(url + "/api/v1/api-keys", json=body, headers=AUTH_HEADERS) as answer:
            assert answer.status == 201, await answer.text()
            secrets.append((await answer.json())["data"]["secret"])
    return secrets


async def fill_socket(ws: aiohttp.ClientWebSocketResponse, index: int, channels: int) -> tuple[int, int]:
    """Join `channels` + 1 distinct topics; (joined, refused)."""
    for n in range(channels + 1):
        ref = str(n + 1)
        await ws.send_str(json.dumps([ref, ref, f"telemetry:exp_{index}_{n}", "phx_join", {}]))
    joined = refused = 0
    while joined + refused < channels + 1:
        frame = await ws.receive(timeout=120)
        if frame.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"socket {index} got {frame.type.name} {frame.data} {frame.extra}")
        message = json.loads(frame.data)
        if message[3] == "phx_reply":
            if message[4]["status"] == "ok":
                joined += 1
            else:
                refused += 1
    return joined, refused


async def live_memory(url: str, sockets: int, channels: int, rss: RssSampler) -> dict[str, Any]:
    ws_url = url.replace("http://", "ws://") + "/socket/websocket"
    # No connection limit: aiohttp's default of 100 would hold the 101st socket back.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        progress("live memory: keys")
        secrets = await make_keys(session, url, -(-sockets // SOCKETS_PER_KEY))
        await asyncio.sleep(1.0)
        before = rss.current()
        rss.phase("sockets")
        opened = [
            await session.ws_connect(ws_url, params={"token": secrets[n // SOCKETS_PER_KEY], "vsn": "2.0.0"})
            for n in range(sockets)
        ]
        progress(f"live memory: {len(opened)} sockets open, joining")
        results = await asyncio.gather(*(fill_socket(ws, n, channels) for n, ws in enumerate(opened)))
        progress("live memory: joined")
        await asyncio.sleep(1.0)
        after = rss.current()
        refused_socket = None
        try:
            extra = await session.ws_connect(ws_url, params={"token": secrets[0], "vsn": "2.0.0"})
            await extra.close()
        except aiohttp.WSServerHandshakeError as exc:
            refused_socket = exc.status
        for ws in opened:
            await ws.close()
    return {
        "sockets": sockets,
        "keys": len(secrets),
        "channels_joined": sum(j for j, _ in results),
        "joins_refused": sum(r for _, r in results),
        "socket_over_key_cap_status": refused_socket,
        "rss_before_mib": before / MIB,
        "rss_joined_mib": after / MIB,
        "rss_peak_mib": rss.peaks_by_phase.get("sockets", 0) / MIB,
    }


def bracket_scan_too_deep(data: bytes, limit: int) -> bool:
    """The cheapest pre-decode depth check found: C-speed bytes operations, no per-byte Python loop."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    text = data
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = b"".join(text.split(b'"')[::2])  # outside strings only
    text = text.translate(bytes.maketrans(b"{}", b"[]"), bytes(b for b in range(256) if b not in b"[]{}"))
    passes = 0
    while (shorter := text.replace(b"[]", b"")) != text:  # one level of pairs a pass
        text, passes = shorter, passes + 1
        if passes > limit:
            return True
    return passes + text.count(b"[") > limit


def nesting_check_cost() -> dict[str, Any]:
    event = {
        "event_name": ["crucible", "model", "inference"],
        "measurements": {"latency_ms": 12.5, "tokens": 100.0},
        "metadata": {"experiment_id": "exp_abc123", "model": "gpt-x", "run_id": "run_1"},
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"prompt": 'a "quoted" [bracketed] {braced} prompt', "k": [1, 2, 3]},
    }
    body = msgspec.json.encode({"events": [event] * 3_000})
    from schemas.telemetry import IngestBatch

    decoder = msgspec.json.Decoder(IngestBatch)

    def per_mb(run: Any, repeat: int = 20) -> float:
        started = time.perf_counter()
        for _ in range(repeat):
            run()
        return (time.perf_counter() - started) / repeat * 1000 / (len(body) / 1e6)

    return {
        "body_bytes": len(body),
        "decode_ms_per_mb": per_mb(lambda: decoder.decode(body)),
        "scan_ms_per_mb": per_mb(lambda: bracket_scan_too_deep(body, 128)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "hostile_input", "nesting_check": nesting_check_cost()}
    tmp = Path(tempfile.mkdtemp(prefix="crucible-hostile-"))
    server = start_server(tmp / "data", tmp / "serve.log", ["--ingest-workers", "1"])
    rss = RssSampler(server.process.pid if server.process else 0)
    rss.start()
    try:
        result["health"] = asyncio.run(health_under_attack(server.url, args.seconds))
        result["live"] = asyncio.run(live_memory(server.url, args.sockets, args.channels, rss))
        log = (tmp / "serve.log").read_text()
        result["log_tracebacks"] = log.count("Traceback")
    finally:
        rss.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> None:
    health, live, nesting = result["health"], result["live"], result["nesting_check"]
    print("/healthz while compression bombs and deeply nested bodies arrive")
    print_table(
        ["phase", "p50 ms", "p99 ms", "max ms", "polls"],
        [
            ["alone", health["baseline_ms"]["p50"], health["baseline_ms"]["p99"], None, None],
            [
                f"under attack ({health['rounds']} rounds)",
                health["attacked_ms"]["p50"],
                health["attacked_ms"]["p99"],
                health["attacked_max_ms"],
                health["health_polls"],
            ],
        ],
    )
    print(f"attack answers by status: {health['statuses']}; server log tracebacks: {result['log_tracebacks']}")
    print(f"\nlive memory: {live['sockets']} sockets on {live['keys']} keys")
    print_table(
        ["channels joined", "joins refused", "socket over key cap", "RSS before MiB", "RSS joined MiB", "peak MiB"],
        [
            [
                live["channels_joined"],
                live["joins_refused"],
                fmt(live["socket_over_key_cap_status"]),
                live["rss_before_mib"],
                live["rss_joined_mib"],
                live["rss_peak_mib"],
            ]
        ],
    )
    print(f"\nnesting check on a {nesting['body_bytes']:,}-byte ingest body (ms per MB)")
    print_table(["msgspec decode", "bracket-depth scan"], [[nesting["decode_ms_per_mb"], nesting["scan_ms_per_mb"]]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the baseline and the attack")
    parser.add_argument("--sockets", type=int, default=1_000, help="WebSockets of the live memory phase")
    parser.add_argument("--channels", type=int, default=100, help="the server's ws_max_channels (its default)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    result = run(args)
    report(result)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
