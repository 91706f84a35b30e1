"""One `LiveSync` per loaded bundle: started after the bundle loads, stopped when it retires.

The reloader calls `follow(bundles)` with the bundles it is about to serve (before the swap, so a
new bundle's first request already sees its replayed changes), then `retire(bundles)` once the
swap is done, which stops the syncs of bundles no longer served. A bundle kept across a reload
keeps its sync and delta. Without Redis the change log is in-process (`MemoryChangeLog`): the
same code within one process.

`version(bundle)` is the consistency hook for requests that have no store round trip of their
own (retrieve, similar, item metadata, in-process cache hits): a bounded GET of the bundle's
change counter, coalesced (`version_reads.NextFlight`) so a worker sends about one per round
trip, each sent after the requests it answers arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from service.catalog.bundle import Bundle
from service.catalog.changes import ChangeLog, MemoryChangeLog, RedisChangeLog
from service.catalog.live_sync import LiveSync
from service.catalog.version_reads import NextFlight
from service.errors import StoreUnavailableError
from service.settings import Settings

log = logging.getLogger(__name__)
_LOG_TIMEOUT_S = 0.5


def open_change_log(settings: Settings) -> ChangeLog:
    """Redis when `DUET_REDIS_URL` is set, else the in-process log."""
    if settings.redis_url is None:
        return MemoryChangeLog()
    return RedisChangeLog(settings.redis_url, timeout_s=_LOG_TIMEOUT_S)


class LiveFeeds:
    def __init__(
        self, changes: ChangeLog, *, request_timeout_s: float, block_ms: int = 1_000
    ) -> None:
        self.changes = changes
        self.shared = isinstance(changes, RedisChangeLog)
        """True when other processes write the log too (Redis): requests must check versions."""
        self._request_timeout = request_timeout_s
        self._block_ms = block_ms
        self._syncs: dict[int, tuple[Bundle, LiveSync]] = {}
        self._reads: dict[str, NextFlight] = {}

    def sync(self, bundle: Bundle) -> LiveSync | None:
        entry = self._syncs.get(id(bundle))
        return entry[1] if entry is not None and entry[0] is bundle else None

    async def follow(self, bundles: Iterable[Bundle]) -> None:
        """Replay and tail every bundle not followed yet. A replay Redis refuses is logged and
        left to the tail (which starts from the beginning) and to the requests' `catch_up`."""
        for bundle in bundles:
            if self.sync(bundle) is not None:
                continue
            start = bundle.manifest.compacted_from
            after, version = ("0-0", 0)
            if start is not None and self.shared:  # an in-process log starts empty
                after, version = start.position, start.catalog_version
            sync = LiveSync(
                bundle.manifest.change_log, bundle.live, bundle.items, self.changes,
                block_ms=self._block_ms, after=after, version=version,
            )  # fmt: skip
            try:
                await sync.replay()
            except StoreUnavailableError as exc:
                log.warning("catalog replay of %s deferred: %s", bundle.version, exc.message)
            sync.start()
            self._syncs[id(bundle)] = (bundle, sync)
            log.info("catalog of %s: %d live changes applied", bundle.version, sync.version)

    async def retire(self, serving: Iterable[Bundle]) -> None:
        """Stop the syncs of bundles not in `serving` (their in-flight requests keep the delta)."""
        keep = {id(b) for b in serving}
        for key in [k for k in self._syncs if k not in keep]:
            bundle, sync = self._syncs.pop(key)
            name = bundle.manifest.change_log
            if all(b.manifest.change_log != name for b, _ in self._syncs.values()):
                self._reads.pop(name, None)
            await sync.stop()

    async def version(self, bundle: Bundle) -> int | None:
        """The bundle's change count in the shared log, within the request deadline; None when
        nothing else writes the log (in-process) or Redis did not answer in time."""
        if not self.shared:
            return None
        name = bundle.manifest.change_log  # one counter per log: a lineage's bundles share it
        reads = self._reads.get(name)
        if reads is None:
            reads = self._reads[name] = NextFlight(lambda: self._read(name))
        return await reads.get()

    async def _read(self, change_log: str) -> int | None:
        try:
            async with asyncio.timeout(self._request_timeout):
                return await self.changes.version(change_log)
        except (StoreUnavailableError, TimeoutError):
            return None

    async def close(self) -> None:
        await self.retire(())
        await self.changes.close()
