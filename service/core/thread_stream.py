"""A blocking generator run on a thread of its own, its items handed to the event loop.

An export reads a ClickHouse stream and formats a file for as long as it takes; on a
thread of its own that work never holds up the event loop, and the bounded hand-over
(at most `depth` items ahead of the reader) keeps memory flat when the client reads
more slowly than the warehouse answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEPTH = 4
_END = object()


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class ThreadStream(Generic[T]):
    """`async for item in ThreadStream(make)`: the items of `make()`, made on a thread.

    Close it (`aclose`) when done or abandoned: the generator is then closed on its
    thread, at its next item, so whatever it holds (a warehouse stream) is let go.
    """

    def __init__(self, make: Callable[[], Iterator[T]], depth: int = DEPTH, name: str = "export-stream") -> None:
        self._make = make
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        self._stopped = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __aiter__(self) -> ThreadStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        self._room.release()
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            self._finished = True
            raise item.error
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stop the generator and wait until its thread has let go of what it held."""
        self._stopped.set()
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        try:
            items = self._make()
            try:
                for item in items:
                    if not self._hand_over(item):
                        return
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as error:
            self._hand_over(_Failed(error))
        else:
            self._hand_over(_END)

    def _hand_over(self, item: Any) -> bool:
        """Queue `item` once there is room; False when the reader has gone."""
        while not self._room.acquire(timeout=0.2):
            if self._stopped.is_set():
                return False
        if self._stopped.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop has closed
            return False
        return True
