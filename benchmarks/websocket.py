"""Live API benchmark: WebSocket latency, idle sockets' memory, and a telemetry fan-out.

Embedded default, this machine, the clients in this process. Phases:

1. latency: one socket joined to `telemetry:<experiment>`; one-event ingests, paced,
   each carrying its own id; the time from its 202 (as the client receives it) to the
   event's push reaching the socket. Target p99 <= 250 ms.
2. idle: --idle-sockets sockets, each joined to a telemetry channel that gets no events;
   the server's RSS before they connect and once they all joined. Target <= 200 MiB
   extra for 2,000.
3. fan-out: --fanout-sockets sockets joined to `telemetry:all` while --rate events/s
   are ingested (1,000-event batches) for --seconds, plus --stalled-sockets that stop
   reading once joined; how many events each socket got, how many sockets were
   disconnected as too slow (`/metrics`), the server's CPU and peak RSS.
   Target: 500 sockets keep up with 10,000 events/s, or the slow ones are disconnected.

The fan-out sockets are minimal clients (a raw asyncio protocol that counts pushes in
the bytes it reads, without parsing frames), so that the client costs as little as it
can; on a 2-core machine they still compete with the server for the CPU.

    python benchmarks/websocket.py                    # ~1.5 min
    python benchmarks/websocket.py --fanout-sockets 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import struct
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import psutil
from _support import AUTH_HEADERS, CpuMeter, metric_value, percentiles_ms, print_table, read_metrics, start_server

MIB = 1024 * 1024
PUSH_MARKER = b',"event",{'  # in every telemetry push: [null,null,"telemetry:...","event",{...}]
HEARTBEAT_SECONDS = 20.0
BATCH = 1000  # events per ingest request of the fan-out


def token() -> str:
    return AUTH_HEADERS["Authorization"].removeprefix("Bearer ")


def event(experiment_id: str, n: int, event_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_name": ["crucible", "model", "inference"],
        "measurements": {"duration_ms": 100.0 + n % 50, "tokens": float(n % 500)},
        "metadata": {"experiment_id": experiment_id, "model": "gpt-4", "run_id": f"run_{n % 7}"},
    }
    if event_id is not None:
        body["id"] = event_id
    return body


def client_frame(message: Any) -> bytes:
    """A masked text frame as clients send; the all-zero mask leaves the payload as it is."""
    payload = json.dumps(message).encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return header + b"\0\0\0\0" + payload


class CountingSocket(asyncio.BufferedProtocol):
    """A WebSocket client that joins one topic and counts the telemetry pushes it reads.

    It reads into one buffer of its own and counts a marker of pushes in place, so that
    reading costs the client little more than the kernel's copy."""

    BUFFER_BYTES = 256 * 1024
    KEEP = len(PUSH_MARKER) - 1  # bytes kept at the front: a marker may straddle two reads

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.transport: asyncio.Transport | None = None
        self.upgraded = asyncio.get_running_loop().create_future()
        self.joined = False
        self.pushes = 0
        self.bytes = 0
        self.closed = False
        self.caught_up_at: float | None = None
        self.expected: int | None = None
        self._buffer = bytearray(self.BUFFER_BYTES)
        self._kept = 0
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"/socket/websocket?vsn=2.0.0&token={quote(token())}"
        transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)[self._kept :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._kept + nbytes
        if not self.upgraded.done():
            self._head += bytes(self._buffer[self._kept : end])
            self._kept = 0
            if b"\r\n\r\n" in self._head:
                self._upgrade()
            return
        self.bytes += nbytes
        if not self.joined and self._buffer.find(b'"phx_reply"', 0, end) >= 0:
            self.joined = True
        self.pushes += self._buffer.count(PUSH_MARKER, 0, end)
        self._buffer[: self.KEEP] = self._buffer[end - self.KEEP : end]
        self._kept = self.KEEP
        if self.expected is not None and self.caught_up_at is None and self.pushes >= self.expected:
            self.caught_up_at = time.monotonic()

    def _upgrade(self) -> None:
        head, _, rest = self._head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            self.upgraded.set_exception(RuntimeError(head.split(b"\r\n")[0].decode()))
            return
        self.upgraded.set_result(None)
        assert self.transport is not None and not rest  # the server says nothing before the join
        self._buffer[: self.KEEP] = b"\0" * self.KEEP
        self._kept = self.KEEP
        self.transport.write(client_frame(["1", "1", self.topic, "phx_join", {}]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def heartbeat(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame([None, "hb", "phoenix", "heartbeat", {}]))


async def open_counting_sockets(url: str, topic: str, count: int) -> list[CountingSocket]:
    parsed = aiohttp.client.URL(url)
    loop = asyncio.get_running_loop()
    sockets: list[CountingSocket] = []
    for start in range(0, count, 100):  # in waves: the server's accept queue is finite
        wave = []
        for _ in range(min(100, count - start)):
            _, protocol = await loop.create_connection(
                lambda: CountingSocket(parsed.host or "127.0.0.1", parsed.port or 80, topic),
                parsed.host,
                parsed.port,
            )
            wave.append(protocol)
        await asyncio.gather(*(s.upgraded for s in wave))
        sockets.extend(wave)
    deadline = time.monotonic() + 60
    while not all(s.joined for s in sockets) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return sockets


def close_all(sockets: list[CountingSocket]) -> None:
    for s in sockets:
        if s.transport is not None:
            s.transport.close()


def server_rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def latency_phase(url: str, samples: int, interval: float) -> dict[str, Any]:
    experiment_id = f"exp_latency_{uuid.uuid4().hex[:8]}"
    arrived: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as session:
        ws = await session.ws_connect(f"{url}/socket/websocket?vsn=2.0.0&token={quote(token())}")
        await ws.send_str(json.dumps(["1", "1", f"telemetry:{experiment_id}", "phx_join", {}]))
        await ws.receive()

        async def receive() -> None:
            async for frame in ws:
                message = json.loads(frame.data)
                if message[3] == "event":
                    arrived[message[4]["id"]] = time.monotonic()

        receiver = asyncio.create_task(receive())
        answered: dict[str, float] = {}
        for n in range(samples):
            event_id = f"evt_latency_{n}"
            body = {"events": [event(experiment_id, n, event_id)]}
            async with session.post(f"{url}/api/v1/telemetry/events", json=body) as answer:
                assert answer.status == 202, await answer.text()
                answered[event_id] = time.monotonic()
            await asyncio.sleep(interval)
        deadline = time.monotonic() + 10
        while len(arrived) < samples and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        receiver.cancel()
        await ws.close()
    # Negative: the push reached the socket before the 202 reached the client.
    delays = [max(arrived[i] - answered[i], 0.0) for i in answered if i in arrived]
    return {"sent": samples, "received": len(arrived), **percentiles_ms(delays)}


async def idle_phase(url: str, pid: int, count: int) -> dict[str, Any]:
    before = server_rss(pid)
    sockets = await open_counting_sockets(url, "telemetry:exp_idle_nothing", count)
    await asyncio.sleep(2.0)
    after = server_rss(pid)
    joined = sum(s.joined for s in sockets)
    close_all(sockets)
    await asyncio.sleep(1.0)
    return {
        "sockets": count,
        "joined": joined,
        "rss_before_mib": before / MIB,
        "rss_after_mib": after / MIB,
        "extra_mib": (after - before) / MIB,
        "extra_kib_per_socket": (after - before) / 1024 / max(count, 1),
    }


def drive_ingest(url: str, headers: dict[str, str], rate: int, batches: int, done: Any) -> None:
    """In a process of its own (the readers would starve its pacing): paced 1,000-event batches."""
    bodies = [
        json.dumps({"events": [event(f"exp_fan_{(b * BATCH + i) % 20}", i) for i in range(BATCH)]}).encode()
        for b in range(batches)
    ]
    started = time.monotonic()
    for n, body in enumerate(bodies):
        request = urllib.request.Request(
            f"{url}/api/v1/telemetry/events", data=body, headers={**headers, "Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 202
        pause = started + (n + 1) * BATCH / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    done.send(time.monotonic() - started)


async def fanout_phase(url: str, pid: int, count: int, stalled: int, rate: int, seconds: float) -> dict[str, Any]:
    batches = max(int(rate * seconds / BATCH), 1)
    sockets = await open_counting_sockets(url, "telemetry:all", count)
    joined = sum(s.joined for s in sockets)
    # Sockets that stop reading once joined: the server must drop them, not buffer for them.
    stalled_sockets = await open_counting_sockets(url, "telemetry:all", stalled)
    for s in stalled_sockets:
        assert s.transport is not None
        s.transport.pause_reading()
    slow_metric = 'crucible_live_slow_disconnects_total{transport="websocket"}'
    slow_before = metric_value(read_metrics(url), slow_metric)
    expected = batches * BATCH
    for s in sockets:
        s.expected = expected
    meter = CpuMeter(pid).start()
    rss_peak = 0
    receiving, sending = multiprocessing.Pipe(duplex=False)
    driver = multiprocessing.Process(target=drive_ingest, args=(url, dict(AUTH_HEADERS), rate, batches, sending))
    driver.start()
    last_heartbeat = time.monotonic()
    while not receiving.poll():
        await asyncio.sleep(0.1)
        rss_peak = max(rss_peak, server_rss(pid))
        if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
            last_heartbeat = time.monotonic()
            for s in sockets:
                s.heartbeat()
    ingest_seconds = receiving.recv()
    driver.join()
    last_202 = time.monotonic()
    deadline = last_202 + 15
    while time.monotonic() < deadline and not all(s.caught_up_at or s.closed for s in sockets):
        await asyncio.sleep(0.1)
        rss_peak = max(rss_peak, server_rss(pid))
    cpu = meter.stop()
    slow_after = metric_value(read_metrics(url), slow_metric)
    caught_up = [s for s in sockets if s.caught_up_at is not None]
    close_all(sockets + stalled_sockets)
    received = sorted(s.pushes for s in sockets)
    lags = [max((s.caught_up_at or 0) - last_202, 0.0) for s in caught_up]
    return {
        "sockets": count,
        "joined": joined,
        "stalled": stalled,
        "events_sent": expected,
        "ingest_rate": expected / ingest_seconds,
        "kept_up": len(caught_up),
        "disconnected_slow": int(slow_after - slow_before),
        "closed": sum(s.closed for s in sockets),
        "events_received_min": received[0] if received else 0,
        "events_received_median": received[len(received) // 2] if received else 0,
        "delivered_events_per_s": sum(received) / ingest_seconds,
        "delivered_mib_per_s": sum(s.bytes for s in sockets) / MIB / ingest_seconds,
        "catch_up_after_last_202": percentiles_ms(lags),
        "server_cores": cpu["server_cores"],
        "machine_idle_cores": cpu["machine_idle_cores"],
        "server_rss_peak_mib": rss_peak / MIB,
    }


async def run(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result["latency"] = await latency_phase(url, args.latency_samples, args.latency_interval)
    result["idle"] = await idle_phase(url, pid, args.idle_sockets)
    result["fanout"] = await fanout_phase(url, pid, args.fanout_sockets, args.stalled_sockets, args.rate, args.seconds)
    return result


def report(result: dict[str, Any]) -> None:
    latency, idle, fanout = result["latency"], result["idle"], result["fanout"]
    print("\n202 -> push at the subscribed socket (one-event ingests)")
    print_table(
        ["sent", "received", "p50 ms", "p95 ms", "p99 ms", "max ms", "target p99"],
        [
            [
                latency["sent"],
                latency["received"],
                latency["p50"],
                latency["p95"],
                latency["p99"],
                latency["max"],
                "<= 250 ms",
            ]
        ],
    )
    print("\nidle sockets (each joined to a quiet telemetry channel)")
    print_table(
        ["sockets", "joined", "RSS before MiB", "RSS after MiB", "extra MiB", "KiB/socket", "target"],
        [
            [
                idle["sockets"],
                idle["joined"],
                idle["rss_before_mib"],
                idle["rss_after_mib"],
                idle["extra_mib"],
                idle["extra_kib_per_socket"],
                "<= 200 MiB for 2,000",
            ]
        ],
    )
    print("\nfan-out to telemetry:all")
    lag = fanout["catch_up_after_last_202"]
    print_table(
        [
            "sockets",
            "stalled",
            "events sent",
            "ingest ev/s",
            "kept up",
            "closed as slow",
            "min got",
            "median got",
            "delivered ev/s",
            "MiB/s out",
            "catch-up p99 ms",
            "server cores",
            "idle cores",
            "RSS peak MiB",
        ],
        [
            [
                fanout["sockets"],
                fanout["stalled"],
                fanout["events_sent"],
                fanout["ingest_rate"],
                fanout["kept_up"],
                fanout["disconnected_slow"],
                fanout["events_received_min"],
                fanout["events_received_median"],
                fanout["delivered_events_per_s"],
                fanout["delivered_mib_per_s"],
                lag["p99"],
                fanout["server_cores"],
                fanout["machine_idle_cores"],
                fanout["server_rss_peak_mib"],
            ]
        ],
    )
    print(json.dumps(result, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-samples", type=int, default=200, help="one-event ingests timed (default 200)")
    parser.add_argument("--latency-interval", type=float, default=0.05, help="seconds between them (default 0.05)")
    parser.add_argument("--idle-sockets", type=int, default=2000, help="idle sockets (default 2,000)")
    parser.add_argument("--fanout-sockets", type=int, default=500, help="sockets on telemetry:all (default 500)")
    parser.add_argument(
        "--stalled-sockets", type=int, default=10, help="more sockets there that stop reading (default 10)"
    )
    parser.add_argument("--rate", type=int, default=10_000, help="events/s ingested in the fan-out (default 10,000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the fan-out (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crucible-websocket-bench-"))
    server = start_server(work / "data", work / "serve.log")
    try:
        assert server.process is not None
        result = asyncio.run(run(args, server.url, server.process.pid))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
