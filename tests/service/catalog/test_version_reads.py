"""NextFlight: coalesced version reads that are never older than the caller, on a real Redis."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from service.catalog.changes import Change, RedisChangeLog
from service.catalog.version_reads import NextFlight


class _Counter:
    """A read whose answer is the number of reads started so far, after a pause."""

    def __init__(self, pause_s: float = 0.01) -> None:
        self.started = 0
        self._pause = pause_s

    async def __call__(self) -> int | None:
        self.started += 1
        mine = self.started
        await asyncio.sleep(self._pause)
        return mine


async def test_concurrent_callers_share_reads() -> None:
    read = _Counter()
    flight = NextFlight(read)
    answers = await asyncio.gather(*(flight.get() for _ in range(50)))
    # The first caller starts read 1; the 49 that arrived while it ran share read 2.
    assert answers == [1] + [2] * 49
    assert flight.reads == read.started == 2


async def test_caller_arriving_mid_read_gets_a_later_read() -> None:
    read = _Counter(pause_s=0.05)
    flight = NextFlight(read)
    first = asyncio.create_task(flight.get())
    await asyncio.sleep(0.01)  # read 1 is in flight; a value written now is not in it
    assert await flight.get() == 2
    assert await first == 1


async def test_failed_read_answers_none_and_the_next_one_runs() -> None:
    calls = 0

    async def flaky() -> int | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise ConnectionError("down")
        return 7

    flight = NextFlight(flaky)
    assert await flight.get() is None
    assert await flight.get() == 7


async def test_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    flight = NextFlight(_Counter(pause_s=0.05))
    first = asyncio.create_task(flight.get())
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(flight.get())
    other = asyncio.create_task(flight.get())  # doomed and other wait for read 2
    await asyncio.sleep(0.01)
    doomed.cancel()
    assert (await first, await other) == (1, 2)


async def test_a_change_logged_before_the_call_is_always_seen(redis_url: str) -> None:
    """Callers racing appends on a real Redis never see a version older than the last append
    that finished before they called."""
    log = RedisChangeLog(redis_url)
    flight = NextFlight(lambda: log.version("b1"))
    raw = aioredis.Redis.from_url(redis_url)
    await raw.delete("duet:cat:{b1}:ver")
    try:
        stale = 0
        for i in range(40):
            done = await log.append("b1", [Change("delete", f"i{i}", {})])
            readers = [asyncio.create_task(flight.get()) for _ in range(5)]
            await asyncio.sleep(0)
            stale += sum(1 for v in await asyncio.gather(*readers) if v is None or v < done)
        assert stale == 0
        assert flight.reads < 40 * 5
    finally:
        await raw.aclose()
        await log.close()
