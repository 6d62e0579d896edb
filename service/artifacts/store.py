"""The artifact store: where checkpoint files live, a local directory or S3-compatible object storage.

A file arrives as a stream of chunks. `receive` counts and hashes it while it writes it
to a staging place, stopping at the size limit, and hands back a `Staged` file:
`commit` makes it the file of its key in one step (local: fsync, then rename; S3:
complete the multipart upload), `discard` drops it. Nothing half-written is ever
visible under a key, and a file is never whole in memory: the next block is read
from the socket while the previous one is written and hashed in a thread.

Keys are (run id, checkpoint id), both `SAFE_ID`s. The stores are
service/artifacts/local.py (the default, under the data dir) and
service/artifacts/s3.py.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from service.resources.run_events import SAFE_ID
from service.settings import Settings

READ_CHUNK_BYTES = 1024 * 1024  # one read of a stored file, one write to the socket
CHECKPOINTS_FOLDER = "checkpoints"


class TooLarge(Exception):
    """The stream went past the size limit; whatever was staged is gone."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class StorageError(Exception):
    """The store could not do what was asked (disk, network, object storage); a retry may work."""


class UnsafePath(StorageError):
    """A path inside the store is a symlink or not what the store made: refused, never followed."""


@dataclass(frozen=True, slots=True)
class ArtifactKey:
    """Where a checkpoint's file lives: `checkpoints/<run_id>/<checkpoint_id>` below the store's root."""

    run_id: str
    checkpoint_id: str

    def __post_init__(self) -> None:
        for value in (self.run_id, self.checkpoint_id):
            if not SAFE_ID.fullmatch(value):
                raise ValueError(f"unsafe artifact name {value!r}")

    @property
    def folders(self) -> tuple[str, str]:
        return (CHECKPOINTS_FOLDER, self.run_id)

    @property
    def name(self) -> str:
        return self.checkpoint_id


class Staged(ABC):
    """A complete file waiting to become its key's file; `size` and `sha256` are known."""

    size: int = 0
    sha256: str = ""

    @abstractmethod
    async def commit(self) -> None:
        """Make this the key's file, atomically; it replaces whatever the key held."""

    @abstractmethod
    async def discard(self) -> None:
        """Drop the staged file; a no-op once committed or discarded."""


class StoredFile(ABC):
    """An open stored file."""

    size: int = 0

    @abstractmethod
    def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes from offset `start`, in chunks."""

    @abstractmethod
    async def close(self) -> None: ...


class ArtifactStore(ABC):
    """Checkpoint files by key: staged from a stream, committed whole, read back in ranges."""

    @abstractmethod
    async def start(self) -> None:
        """Connect, make the root; called once before any other method."""

    @abstractmethod
    async def stop(self) -> None:
        """Release connections."""

    @abstractmethod
    async def receive(self, key: ArtifactKey, chunks: AsyncIterable[bytes], limit: int) -> Staged:
        """Stage the stream for `key`; TooLarge (nothing kept) past `limit` bytes."""

    @abstractmethod
    async def open(self, key: ArtifactKey) -> StoredFile | None:
        """The key's file, or None when it has none."""

    @abstractmethod
    async def remove(self, key: ArtifactKey) -> None:
        """Delete the key's file if it has one."""


def make_store(settings: Settings) -> ArtifactStore:
    """The store `artifact_store` names: unset = `<data dir>/artifacts`, a path or file:// URL, or s3://."""
    # Imported here: each store module builds on this one, and the S3 SDK is optional.
    from service.artifacts.local import LocalStore
    from service.artifacts.s3 import S3Store

    location = settings.artifact_store
    if location is None:
        return LocalStore(settings.data_path / "artifacts")
    if location.startswith("s3://"):
        return S3Store(location)
    return LocalStore(Path(location.removeprefix("file://")))


# -- streaming a body in blocks, shared by the stores ---------------------------------------


async def blocks_of(chunks: AsyncIterable[bytes], block_bytes: int, limit: int) -> AsyncIterator[bytes]:
    """The stream regrouped into blocks of about `block_bytes`; TooLarge as soon as it passes `limit`."""
    pieces: list[bytes] = []
    held = total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise TooLarge(limit)
        pieces.append(chunk)
        held += len(chunk)
        if held >= block_bytes:
            yield b"".join(pieces)
            pieces, held = [], 0
    if pieces:
        yield b"".join(pieces)


async def consume_overlapped(blocks: AsyncIterator[bytes], consume: Callable[[bytes], Awaitable[None]]) -> None:
    """Consume each block in order while the next one is read: disk or network and socket work at once."""
    pending: asyncio.Future[None] | None = None
    try:
        async for block in blocks:
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(consume(block))
        if pending is not None:
            await pending
    finally:
        if pending is not None:
            if not pending.done():
                # A thread cannot be interrupted: let its write end before the caller closes the file.
                await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # seen: the error already raising is the one reported
