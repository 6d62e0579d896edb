"""Free C heap memory is handed back to the system (glibc), so RSS does not ratchet up under load."""

from __future__ import annotations

import sys

import psutil
import pytest

from service.core.memory_trim import release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_leaves_the_process() -> None:
    process = psutil.Process()
    # Many mid-sized blocks, below glibc's mmap threshold, freed while a few stay live
    # among them: the heap cannot shrink from the top, only malloc_trim gives the pages back.
    blocks = [bytearray(100_000) for _ in range(2_000)]
    keep = blocks[::100]
    del blocks
    before = process.memory_info().rss
    assert release_free_memory()
    assert before - process.memory_info().rss > 50 * 2**20
    assert len(keep) == 20
