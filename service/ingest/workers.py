"""Ingest worker processes: large batches are decoded and encoded off the event loop.

Decoding a 1,000-event batch makes and frees some 15,000 Python objects; on the
event loop that work, not the HTTP or the log, was what capped ingest (the loop
was saturated while a core sat idle, and durable appends waited for it to be
free). Each worker takes a body's bytes and returns the record values ready to
append, so the loop only moves bytes. A small body is prepared in place: sending
it to a process would cost more than decoding it.

Each worker is a child process (`python -m service.ingest.workers`) spoken to over
its stdin and stdout, one length-prefixed msgpack frame each way per batch: no
helper threads, locks or pickling in the server, unlike a ProcessPoolExecutor,
which cost twice the CPU per batch. The most recently used idle worker takes the
next batch, so one worker stays warm in the CPU's caches while load is light
(alternating between two cost 70 % more CPU per batch; on 2 cores one worker
gave the most throughput, 191k events/s against 183k with two).

Preparing a batch appends nothing, so a batch whose worker dies is given to another
worker; one that two workers die on is answered 503 (nothing was appended). Dead
workers are replaced; while none is alive, batches are decoded in place. The
server's Ctrl-C does not reach the workers; they end when their stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import struct
import sys
from typing import Any

import msgspec

from service.ingest.batch import BatchRefused, PreparedBatch, prepare_batch

logger = logging.getLogger(__name__)

_FRAME_HEADER = struct.Struct(">I")  # the length of the frame that follows
# A reply holds the events re-encoded, about the size of the body; bodies are capped well below this.
_PIPE_LIMIT = 1 << 20
_READY = b""  # the first frame a worker sends, once its imports are done


class _Request(msgspec.Struct, array_like=True):
    body: bytes
    max_events: int
    batch_id: str
    received_at: dt.datetime


class _Refusal(msgspec.Struct, tag="refused"):
    status: int
    code: str
    message: str
    details: dict[str, Any]
    rejected: int


class _Prepared(msgspec.Struct, tag="prepared"):
    batch: PreparedBatch


_request_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(_Prepared | _Refusal)


class WorkersUnavailable(Exception):
    """The worker preparing a batch died; nothing of the batch was appended."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def call(self, request: bytes) -> bytes:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.writelines([_FRAME_HEADER.pack(len(request)), request])
        await stdin.drain()
        return await _read_frame(stdout)

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the worker's loop ends at end of input
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def _read_frame(stream: asyncio.StreamReader) -> bytes:
    (length,) = _FRAME_HEADER.unpack(await stream.readexactly(_FRAME_HEADER.size))
    return await stream.readexactly(length)


class IngestWorkers:
    """Prepares batches in `processes` worker processes, or in place when there are none."""

    def __init__(self, processes: int, inline_below_bytes: int) -> None:
        self._processes = processes
        self._inline_below = inline_below_bytes
        self._idle: asyncio.LifoQueue[_Worker] = asyncio.LifoQueue()
        self._all: set[_Worker] = set()
        self._busy: set[_Worker] = set()  # preparing a batch now
        self._replacing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for worker in await asyncio.gather(*(self._spawn() for _ in range(self._processes))):
            self._idle.put_nowait(worker)

    async def stop(self) -> None:
        for task in self._replacing:
            task.cancel()
        await asyncio.gather(*self._replacing, return_exceptions=True)
        workers, self._all = self._all, set()
        await asyncio.gather(*(worker.stop() for worker in workers))

    def pids(self) -> set[int]:
        return {worker.process.pid for worker in self._all}

    def busy_pids(self) -> set[int]:
        """The workers preparing a batch now."""
        return {worker.process.pid for worker in self._busy}

    async def prepare(self, body: bytes, max_events: int, batch_id: str, received_at: dt.datetime) -> PreparedBatch:
        if self._all and len(body) >= self._inline_below:
            request = _request_encoder.encode(_Request(body, max_events, batch_id, received_at))
            # Shielded: a request cancelled mid-batch must not leave its reply unread in the
            # worker's pipe, where the next batch would read it as its own.
            reply = await asyncio.shield(asyncio.ensure_future(self._call(request)))
            if isinstance(reply, _Refusal):
                raise BatchRefused(reply.status, reply.code, reply.message, reply.details, reply.rejected)
            if reply is not None:
                return reply.batch
        return prepare_batch(body, max_events, batch_id, received_at)

    async def _call(self, request: bytes) -> _Prepared | _Refusal | None:
        """A worker's reply; None when no worker is alive (the caller decodes in place).

        Preparing appends nothing, so a batch whose worker died is given to another one,
        once: a batch that kills two workers is answered 503 rather than killing them all.
        """
        for _ in range(2):
            worker = await self._take()
            if worker is None:
                return None
            self._busy.add(worker)
            try:
                reply = await worker.call(request)
            except (OSError, asyncio.IncompleteReadError):
                self._replace(worker)
                continue
            finally:
                self._busy.discard(worker)
            self._idle.put_nowait(worker)
            return _reply_decoder.decode(reply)
        raise WorkersUnavailable("ingest worker processes died preparing this batch")

    async def _take(self) -> _Worker | None:
        """The most recently used idle worker, or None while none is alive (being replaced)."""
        while self._all:
            try:
                async with asyncio.timeout(0.5):  # not wait_for, which can lose a cancellation on 3.11
                    worker = await self._idle.get()
            except TimeoutError:
                continue
            if worker.alive:
                return worker
            self._replace(worker)  # died while idle
        return None

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_PIPE_LIMIT,
        )
        worker = _Worker(process)
        assert process.stdout is not None
        try:
            await _read_frame(process.stdout)  # _READY
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        self._all.add(worker)
        return worker

    def _replace(self, dead: _Worker) -> None:
        logger.error("an ingest worker process ended (exit code %s); starting another", dead.process.returncode)
        self._all.discard(dead)
        with contextlib.suppress(ProcessLookupError):
            dead.process.kill()
        task = asyncio.create_task(self._respawn(dead))
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def _respawn(self, dead: _Worker) -> None:
        await dead.process.wait()
        delay = 0.5
        while True:
            try:
                worker = await self._spawn()
            except (OSError, asyncio.IncompleteReadError) as exc:
                logger.error("could not start an ingest worker process (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._idle.put_nowait(worker)
            return


# -- the worker process ------------------------------------------------------------------

_request_decoder = msgspec.msgpack.Decoder(_Request)
_reply_encoder = msgspec.msgpack.Encoder()


def _reply_to(request: _Request) -> _Prepared | _Refusal:
    try:
        return _Prepared(prepare_batch(request.body, request.max_events, request.batch_id, request.received_at))
    except BatchRefused as refused:
        return _Refusal(refused.status, refused.code, refused.message, refused.details, refused.rejected)


def serve(stdin: Any, stdout: Any) -> None:
    """Answer batches on `stdin` with replies on `stdout` until `stdin` ends."""

    def send(frame: bytes) -> None:
        stdout.write(_FRAME_HEADER.pack(len(frame)))
        stdout.write(frame)
        stdout.flush()

    send(_READY)
    while header := stdin.read(_FRAME_HEADER.size):
        (length,) = _FRAME_HEADER.unpack(header)
        send(_reply_encoder.encode(_reply_to(_request_decoder.decode(stdin.read(length)))))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when its workers stop
    serve(sys.stdin.buffer, sys.stdout.buffer)
