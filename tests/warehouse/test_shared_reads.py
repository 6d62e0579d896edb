"""SharedReads: identical reads in flight together run once; nothing else is shared."""

from __future__ import annotations

import asyncio

from service.warehouse.shared_reads import SharedReads


class Reads:
    """A read that waits until released, counting how often it really ran."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.fail = False

    async def run(self) -> bytes:
        self.runs += 1
        number = self.runs
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the warehouse failed")
        return b"answer %d" % number


async def test_copies_in_flight_together_run_once_and_share_the_answer() -> None:
    shared, reads = SharedReads(), Reads()
    copies = [asyncio.ensure_future(shared.read("q", {"a": 1, "b": [2]}, reads.run)) for _ in range(10)]
    await asyncio.sleep(0)
    # The same parameters in another order are the same read; other parameters are not.
    other = asyncio.ensure_future(shared.read("q", {"b": [2], "a": 1}, reads.run))
    different = asyncio.ensure_future(shared.read("q", {"a": 2, "b": [2]}, reads.run))
    await asyncio.sleep(0)
    reads.release.set()
    answers = await asyncio.gather(*copies, other)
    assert reads.runs == 2 and set(answers) == {answers[0]} and await different != answers[0]
    assert len(shared) == 0


async def test_reads_one_after_another_each_run() -> None:
    shared, reads = SharedReads(), Reads()
    reads.release.set()
    assert await shared.read("q", {}, reads.run) == b"answer 1"
    assert await shared.read("q", {}, reads.run) == b"answer 2"


async def test_a_caller_that_leaves_does_not_cancel_the_read_for_the_others() -> None:
    shared, reads = SharedReads(), Reads()
    first = asyncio.ensure_future(shared.read("q", {}, reads.run))
    second = asyncio.ensure_future(shared.read("q", {}, reads.run))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    reads.release.set()
    assert await second == b"answer 1"
    assert first.cancelled() and reads.runs == 1


async def test_a_failure_reaches_every_copy_and_the_next_read_runs_again() -> None:
    shared, reads = SharedReads(), Reads()
    reads.fail = True
    copies = [asyncio.ensure_future(shared.read("q", {}, reads.run)) for _ in range(3)]
    await asyncio.sleep(0)
    reads.release.set()
    for outcome in await asyncio.gather(*copies, return_exceptions=True):
        assert isinstance(outcome, RuntimeError)
    reads.fail = False
    assert await shared.read("q", {}, reads.run) == b"answer 2"
