"""Checkpoint files: upload and download throughput of one large file, and the server's memory meanwhile.

A real `crucible serve` (embedded default, local artifact store in its data dir) on
loopback. The client streams --size bytes (a random block repeated, so the client
spends no time reading a file) as one PUT, then downloads the file twice: once
hashing what it receives (the bytes must be the ones sent) and once only counting
them (throughput). The server's RSS (with its children) is sampled every 50 ms;
its growth is the peak during a transfer minus the RSS just before it.

Targets: >= 200 MB/s each way on loopback; RSS growth <= 50 MiB during the upload.
The file is written to the data dir's disk and fsynced before the upload answers;
the download then mostly reads it from the page cache. If the disk lacks room for
the file (twice, with margin) the size is reduced, and the output says so.

    python benchmarks/checkpoints.py                  # 2 GiB, ~1 min
    python benchmarks/checkpoints.py --size-mib 512   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from _support import AUTH_HEADERS, CpuMeter, RssSampler, source_revision, start_server

MiB = 1024 * 1024
BLOCK_BYTES = 4 * MiB
TARGETS = {"upload_mb_s": 200, "download_mb_s": 200, "upload_rss_growth_mib": 50}
RUN_ID = "run_bench"


def repeated(block: bytes, size: int) -> tuple[AsyncIterator[bytes], str]:
    """`size` bytes made of `block` repeated, as a stream, and their SHA-256."""
    full, rest = divmod(size, len(block))
    digest = hashlib.sha256()
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(full):
            yield block
        if rest:
            yield block[:rest]

    return stream(), digest.hexdigest()


async def start_run(session: aiohttp.ClientSession, base: str) -> None:
    """A run, as a worker starts one; ready once a probe upload finds it."""
    async with session.post(base + "/api/v1/experiments", json={"experiment": {"name": "checkpoint bench"}}) as answer:
        experiment_id = (await answer.json())["data"]["id"]
    event = {
        "event_name": ["crucible", "run", "started"],
        "metadata": {"run_id": RUN_ID, "experiment_id": experiment_id},
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }
    async with session.post(base + "/api/v1/telemetry/events", json={"events": [event]}) as answer:
        assert answer.status == 202, await answer.text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with session.put(f"{base}/api/v1/runs/{RUN_ID}/checkpoints/probe", data=b"probe") as answer:
            if answer.status in (200, 201):
                return
        await asyncio.sleep(0.1)
    raise TimeoutError("the run did not appear")


async def transfer(base: str, size: int, rss: RssSampler, cpu: CpuMeter) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    url = f"{base}/api/v1/runs/{RUN_ID}/checkpoints/ckpt_big"
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(headers=AUTH_HEADERS, timeout=timeout) as session:
        await start_run(session, base)
        stream, sha256 = repeated(os.urandom(BLOCK_BYTES), size)
        await asyncio.sleep(1.0)  # an RSS baseline at rest
        before = rss.current()
        rss.phase("upload")
        cpu.start()
        started = time.monotonic()
        headers = {"Content-Length": str(size), "X-Content-SHA256": sha256}
        async with session.put(url, data=stream, headers=headers) as answer:
            body = await answer.json()
        seconds = time.monotonic() - started
        usage = cpu.stop()
        rss.phase("after upload")
        assert answer.status == 201, body
        assert body["data"]["sha256"] == sha256
        upload = {
            "seconds": seconds,
            "mb_s": size / seconds / 1e6,
            "rss_before_mib": before / MiB,
            "rss_growth_mib": (rss.peaks_by_phase["upload"] - before) / MiB,
            "server_cores": usage["server_cores"],
            "machine_idle_cores": usage["machine_idle_cores"],
        }
        downloads = []
        for verify in (True, False):
            await asyncio.sleep(0.5)
            before = rss.current()
            phase = "download verified" if verify else "download"
            rss.phase(phase)
            digest = hashlib.sha256()
            received = 0
            cpu.start()
            started = time.monotonic()
            async with session.get(url + "/download") as answer:
                assert answer.status == 200
                async for chunk in answer.content.iter_chunked(1 * MiB):
                    received += len(chunk)
                    if verify:
                        digest.update(chunk)
            seconds = time.monotonic() - started
            usage = cpu.stop()
            rss.phase("after " + phase)
            assert received == size
            if verify:
                assert digest.hexdigest() == sha256, "the download differs from the upload"
            downloads.append(
                {
                    "client_hashes": verify,
                    "seconds": seconds,
                    "mb_s": size / seconds / 1e6,
                    "rss_growth_mib": (rss.peaks_by_phase[phase] - before) / MiB,
                    "server_cores": usage["server_cores"],
                    "machine_idle_cores": usage["machine_idle_cores"],
                }
            )
    return upload, downloads


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="crucible-checkpoints-bench-"))
    free = shutil.disk_usage(work).free
    size = args.size_mib * MiB
    note = None
    if free < 2 * size + 2 * 1024 * MiB:
        size = max((free - 2 * 1024 * MiB) // 2 // MiB, 64) * MiB
        note = f"only {free / 2**30:.1f} GiB free: {size / 2**30:.2f} GiB instead of {args.size_mib / 1024:.2f} GiB"
    result: dict[str, Any] = {"revision": source_revision(), "bytes": size, "note": note, "cpus": os.cpu_count()}
    try:
        limit = str(max(size, 10 * 2**30))
        server = start_server(work / "data", work / "serve.log", extra=["--checkpoint-max-bytes", limit])
        assert server.process is not None
        rss = RssSampler(server.process.pid, interval=0.05)
        rss.start()
        cpu = CpuMeter(server.process.pid)
        try:
            result["upload"], result["downloads"] = asyncio.run(transfer(server.url, size, rss, cpu))
        finally:
            rss.stop()
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> None:
    size = result["bytes"]
    print(f"\ncheckpoint benchmark ({result['revision']}): one file of {size / 2**30:.2f} GiB on loopback")
    if result["note"]:
        print(f"  NOTE: {result['note']}")
    upload = result["upload"]
    print(
        f"  upload:   {upload['mb_s']:7.0f} MB/s ({upload['seconds']:.1f} s, fsync and rename included;"
        f" target >= {TARGETS['upload_mb_s']}); server {upload['server_cores']:.2f} cores,"
        f" machine idle {upload['machine_idle_cores']:.2f} of {result['cpus']}"
    )
    print(
        f"            server RSS {upload['rss_before_mib']:.0f} MiB before, grew {upload['rss_growth_mib']:.1f} MiB"
        f" at peak (target <= {TARGETS['upload_rss_growth_mib']} MiB)"
    )
    for download in result["downloads"]:
        what = "client hashing" if download["client_hashes"] else "client counting"
        print(
            f"  download: {download['mb_s']:7.0f} MB/s ({download['seconds']:.1f} s, {what};"
            f" target >= {TARGETS['download_mb_s']}); server {download['server_cores']:.2f} cores,"
            f" machine idle {download['machine_idle_cores']:.2f}; RSS grew {download['rss_growth_mib']:.1f} MiB"
        )
    print(json.dumps(result, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048, help="size of the file in MiB (default 2048)")
    report(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
