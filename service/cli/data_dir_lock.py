"""One process at a time serves an embedded data dir.

chDB opens its warehouse directory for one process only; a second `crucible serve` (or
`writer`, or `migrate`) on a data dir in use died in chDB's start-up with a traceback
that named neither the cause nor the other process. Each of those commands first takes
an exclusive lock on `<data dir>/serve.lock` and writes its pid there; a second one
finds the lock held and says which process holds it. The kernel releases the lock when
its process ends, however it ends, so a crash never leaves the directory locked.
`crucible keys` appends to the log of a running server and takes no lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # not on Windows, where chDB does not run either
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "serve.lock"


class DataDirInUse(Exception):
    """Another process holds the data dir."""


def hold_data_dir(data_dir: str | Path) -> IO[str] | None:
    """Lock `data_dir` for this process until it ends (keep the returned file open).

    Raises DataDirInUse when another process holds it."""
    if fcntl is None:
        return None
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    lock = open(path / LOCK_FILE, "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DataDirInUse(
            f"the data dir {path} is in use by another crucible process (pid {holder}); "
            "stop it, or give this one another --data-dir"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock
