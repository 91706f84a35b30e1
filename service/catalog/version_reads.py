"""Coalesced reads of a bundle's catalog version, never older than the request that asked.

Requests with no store round trip of their own (retrieve, similar, item metadata, recommends
served from the in-process user cache) must still see every DELETE that returned 2xx before
they arrived, so each needs a version read that *started after it arrived*. One GET per request
did that, and cost warm recommend a quarter of its throughput (a GET per local-cache hit).

Here at most one read per bundle is in flight. A request arriving while one is in flight may
not share it (that read may have been sent before the DELETE returned); it waits for the next
read, which starts as soon as the current one ends and serves everyone who arrived meanwhile.
Under load that is about one GET per Redis round trip instead of one per request, and every
answer is still from a read sent after the request arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Read = Callable[[], Coroutine[Any, Any, int | None]]


class NextFlight:
    """One key's reads: `get()` returns a result from a read that started after it was called."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._running = False
        self._next: asyncio.Future[int | None] | None = None
        self.reads = 0
        """Reads sent (tests and the bench compare it with the calls)."""

    async def get(self) -> int | None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        waiter = self._next
        if not self._running:
            self._start(waiter)
        # Shielded: a cancelled request must not cancel the read others wait for.
        return await asyncio.shield(waiter)

    def _start(self, waiter: asyncio.Future[int | None]) -> None:
        self._next = None
        self._running = True
        self.reads += 1
        task = asyncio.get_running_loop().create_task(self._read())
        task.add_done_callback(lambda done: self._finish(done, waiter))

    def _finish(self, done: asyncio.Task[int | None], waiter: asyncio.Future[int | None]) -> None:
        self._running = False
        if not waiter.done():
            failed = done.cancelled() or done.exception() is not None
            waiter.set_result(None if failed else done.result())
        if self._next is not None:  # someone arrived while this read was in flight
            self._start(self._next)
