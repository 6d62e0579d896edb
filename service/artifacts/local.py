"""The default artifact store: files under a local directory (`<data dir>/artifacts`).

Every component below the root is opened relative to its parent's descriptor with
O_NOFOLLOW, so a symlink planted inside the store is refused, never followed, for
reads and writes; paths are also resolved and checked to lie under the root.
A file is written to a staging name in its final folder, fsynced, then renamed
into place and the folder fsynced: a crash leaves the old file or the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from service.artifacts.store import (
    CHECKPOINTS_FOLDER,
    READ_CHUNK_BYTES,
    ArtifactKey,
    ArtifactStore,
    Staged,
    StorageError,
    StoredFile,
    UnsafePath,
    blocks_of,
    consume_overlapped,
)

BLOCK_BYTES = 4 * 1024 * 1024  # one write (and hash update) in a thread
STAGING_PREFIX = ".upload-"  # cannot clash with a SAFE_ID, which starts with a letter or digit
STALE_STAGING_SECONDS = 24 * 3600  # a staging file untouched this long belongs to a dead upload


def _open_folder(root: Path, folders: tuple[str, ...], create: bool) -> int:
    """A descriptor of root/folders..., each component opened relative to its parent without following
    symlinks (ELOOP or ENOTDIR for a planted one); FileNotFoundError when one is missing."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in folders:
            if create:
                try:
                    os.mkdir(name, 0o750, dir_fd=fd)
                    os.fsync(fd)  # the new folder's entry is durable before a file is renamed into it
                except FileExistsError:
                    pass
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _refusal(error: OSError, what: str) -> StorageError:
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
        return UnsafePath(f"{what} is not a plain file or folder of the store (a symlink?): refused")
    return StorageError(f"{what}: {error.strerror or error}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LocalStore(ArtifactStore):
    """Files under a local directory: `<root>/checkpoints/<run_id>/<checkpoint_id>`.

    The root itself is the operator's choice (it may be a symlink to another disk);
    everything below it is made by the store and must not be a symlink.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_root)

    def _prepare_root(self) -> None:
        (self.root / CHECKPOINTS_FOLDER).mkdir(parents=True, exist_ok=True)
        try:
            self._remove_stale_staging()
        except OSError as error:
            raise _refusal(error, f"the folder {CHECKPOINTS_FOLDER} of the store") from None

    def _remove_stale_staging(self) -> None:
        """Staging files of uploads that a crash interrupted; recent ones may belong to a live upload."""
        oldest = time.time() - STALE_STAGING_SECONDS
        checkpoints = _open_folder(self.root, (CHECKPOINTS_FOLDER,), create=False)
        try:
            for run in os.scandir(checkpoints):
                if not run.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):  # a run folder that is odd stays as it is
                    folder = _open_folder(self.root, (CHECKPOINTS_FOLDER, run.name), create=False)
                    try:
                        for entry in os.scandir(folder):
                            stale = entry.stat(follow_symlinks=False).st_mtime < oldest
                            if entry.name.startswith(STAGING_PREFIX) and stale:
                                os.unlink(entry.name, dir_fd=folder)
                    finally:
                        os.close(folder)
        finally:
            os.close(checkpoints)

    async def stop(self) -> None:
        pass

    def path_of(self, key: ArtifactKey) -> Path:
        """The key's path, checked to resolve inside the root (the descriptors below check it again)."""
        path = self.root.joinpath(*key.folders, key.name)
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise UnsafePath(f"{path} resolves outside the artifact store {root}: refused")
        return path

    async def receive(self, key: ArtifactKey, chunks: AsyncIterable[bytes], limit: int) -> Staged:
        self.path_of(key)
        staged = await asyncio.to_thread(_LocalStaged.create, self.root, key)
        try:
            await consume_overlapped(
                blocks_of(chunks, BLOCK_BYTES, limit), lambda block: asyncio.to_thread(staged.write, block)
            )
            await asyncio.to_thread(staged.sync)
        except BaseException:
            await staged.discard()
            raise
        return staged

    async def open(self, key: ArtifactKey) -> StoredFile | None:
        self.path_of(key)
        return await asyncio.to_thread(self._open, key)

    def _open(self, key: ArtifactKey) -> StoredFile | None:
        try:
            folder = _open_folder(self.root, key.folders, create=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _refusal(error, f"the folder of {key.run_id}") from None
        try:
            fd = os.open(key.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _refusal(error, f"the file of {key.run_id}/{key.checkpoint_id}") from None
        finally:
            os.close(folder)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise UnsafePath(f"the file of {key.run_id}/{key.checkpoint_id} is not a regular file: refused")
        return _LocalFile(fd, info.st_size)

    async def remove(self, key: ArtifactKey) -> None:
        self.path_of(key)
        await asyncio.to_thread(self._remove, key)

    def _remove(self, key: ArtifactKey) -> None:
        try:
            folder = _open_folder(self.root, key.folders, create=False)
        except FileNotFoundError:
            return
        except OSError as error:
            raise _refusal(error, f"the folder of {key.run_id}") from None
        try:
            os.unlink(key.name, dir_fd=folder)  # unlinks a symlink itself, never its target
        except FileNotFoundError:
            pass
        finally:
            os.close(folder)


class _LocalStaged(Staged):
    """A staging file beside its key's file (same folder, so the rename is atomic)."""

    def __init__(self, folder: int, fd: int, staging_name: str, name: str) -> None:
        self._folder: int | None = folder
        self._fd: int | None = fd
        self._staging_name = staging_name
        self._name = name
        self._hash = hashlib.sha256()

    @classmethod
    def create(cls, root: Path, key: ArtifactKey) -> _LocalStaged:
        try:
            folder = _open_folder(root, key.folders, create=True)
        except OSError as error:
            raise _refusal(error, f"the folder of {key.run_id}") from None
        staging_name = f"{STAGING_PREFIX}{key.name}.{uuid.uuid4().hex}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(staging_name, flags, 0o640, dir_fd=folder)
        except OSError as error:
            os.close(folder)
            raise _refusal(error, "a staging file") from None
        return cls(folder, fd, staging_name, key.name)

    def write(self, block: bytes) -> None:
        assert self._fd is not None
        self._hash.update(block)  # releases the GIL: the event loop keeps reading meanwhile
        try:
            _write_all(self._fd, block)
        except OSError as error:
            raise _refusal(error, "writing a checkpoint") from None
        self.size += len(block)

    def sync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        self.sha256 = self._hash.hexdigest()

    async def commit(self) -> None:
        await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        assert self._folder is not None and self._fd is None, "commit after a complete receive only"
        try:
            # rename replaces the name itself, never what a symlink there points to
            os.rename(self._staging_name, self._name, src_dir_fd=self._folder, dst_dir_fd=self._folder)
            os.fsync(self._folder)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(self._staging_name, dir_fd=self._folder)
            raise _refusal(error, f"placing {self._name}") from None
        finally:
            os.close(self._folder)
            self._folder = None

    async def discard(self) -> None:
        if self._folder is not None:
            await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._folder is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._staging_name, dir_fd=self._folder)
            os.close(self._folder)
            self._folder = None


class _LocalFile(StoredFile):
    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    async def chunks(self, start: int, length: int) -> AsyncIterator[bytes]:
        end = start + length
        position = start
        while position < end:
            chunk = await asyncio.to_thread(os.pread, self._fd, min(READ_CHUNK_BYTES, end - position), position)
            if not chunk:
                raise StorageError("the stored file is shorter than recorded")
            position += len(chunk)
            yield chunk

    async def close(self) -> None:
        os.close(self._fd)
