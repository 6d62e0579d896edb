"""Give freed heap memory back to the system every second (glibc).

Ingest allocates and frees a few hundred KiB per request (bodies, record values,
rows read back from the log) on many threads. glibc keeps what is freed inside its
heaps, fragmented among live blocks, so the server's RSS ratcheted up under load and
stayed there: 1,150-1,190 MiB at the peak of a full-rate run. `malloc_trim(0)` hands
the free pages inside every heap back (madvise), without moving anything: with it
once a second the same run peaked at 970 MiB, at no measurable cost in throughput.
Forcing large blocks into mmap instead (M_MMAP_THRESHOLD) also cut RSS, but made
every request body a fresh mapping: 20 % less throughput.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the free pages of the C heaps to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)  # ctypes releases the GIL for the call
    return True


async def keep_releasing(interval_seconds: float) -> None:
    """Release free heap memory every `interval_seconds`, until cancelled (0: never)."""
    if interval_seconds <= 0 or _TRIM is None:
        return
    while True:
        await asyncio.sleep(interval_seconds)
        await asyncio.to_thread(release_free_memory)
