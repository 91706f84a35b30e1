"""Keeps one worker's LiveDelta in step with the change log.

On start it replays the bundle's log; while running a task tails it (blocking reads with a
timeout, retried after a pause on failure). `catch_up(version)` is the consistency hook: the
recommend path passes the catalog version it read, and a worker behind it applies the log up
to that version before answering, so a DELETE that returned 2xx is seen by the next request.

The log is named by `Manifest.change_log`: a compacted bundle follows the log of the bundle it
was compacted from, starting after the position the compaction folded in (`after`, with the
change count there as `version`), so changes made while it compacted, or while both bundles are
served, are applied once and in order (docs/live-catalog.md, "Compaction").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from service.catalog.changes import Change, ChangeLog
from service.catalog.item_embedder import ItemEmbedder
from service.catalog.live import LiveDelta, LiveItem
from service.errors import StoreUnavailableError

log = logging.getLogger(__name__)


def live_item(item_id: str, body: dict[str, object]) -> LiveItem:
    genres = body.get("genres") or []
    year = body.get("year")
    attributes = body.get("attributes") or {}
    return LiveItem(
        item_id=item_id,
        title=str(body.get("title", "")),
        genres=tuple(str(g) for g in genres) if isinstance(genres, list) else (),
        year=int(year) if isinstance(year, int) else None,
        attributes=dict(attributes) if isinstance(attributes, dict) else {},
    )


class LiveSync:
    def __init__(
        self,
        log_name: str,
        delta: LiveDelta,
        embedder: ItemEmbedder,
        changes: ChangeLog,
        *,
        block_ms: int = 1_000,
        after: str = "0-0",
        version: int = 0,
    ) -> None:
        self.log_name = log_name
        self.delta = delta
        self._embedder = embedder
        self._log = changes
        self._block_ms = block_ms
        self.position = after
        self.version = version  # the log's change count up to `position`
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def apply(self, changes: Sequence[Change]) -> None:
        upserts = [live_item(c.item_id, c.body) for c in changes if c.op == "upsert"]
        vectors = iter(self._embedder.embed(upserts) if upserts else ())
        for change in changes:
            if change.op == "upsert":
                self.delta.upsert(live_item(change.item_id, change.body), next(vectors))
            elif change.op == "delete":
                self.delta.delete(change.item_id)
            else:
                self.delta.set_available(change.item_id, bool(change.body.get("available")))
            self.position = change.position
            self.version += 1
        self.delta.applied = self.version

    async def _pull(self, block_ms: int | None) -> int:
        """Read past our position (a blocking read holds no lock), apply what is still new."""
        if block_ms is not None:
            await self._log.read(self.log_name, self.position, count=1, block_ms=block_ms)
        async with self._lock:
            changes = await self._log.read(self.log_name, self.position)
            self.apply(changes)
            return len(changes)

    async def replay(self) -> None:
        while await self._pull(None):
            pass

    async def catch_up(self, version: int) -> None:
        """Apply the log until at least `version` changes are applied."""
        while self.version < version:
            if not await self._pull(None):
                return  # the log is behind the counter only mid-script; next request catches up

    async def _tail(self) -> None:
        # Stopped by an event, not by cancellation alone: `asyncio.wait_for` (the in-process
        # log's blocking read) can swallow a cancel that lands as its wait ends (3.11).
        while not self._stopping.is_set():
            try:
                await self._pull(self._block_ms)
            except StoreUnavailableError as exc:
                log.warning("catalog tail: %s; retrying", exc.message)
                await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tail())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), self._block_ms / 1000 + 1)
