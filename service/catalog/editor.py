"""Catalog changes from the admin API, HTTP-free: log first, then apply here, then answer.

Every change goes to the change log (Redis: one script, so a failure leaves nothing logged and
raises StoreUnavailableError, a 503) before any worker applies it; this worker then catches up
to the version the log returned, so the answer and the next request here already reflect it,
and every other worker catches up on its next request (the version rides its store round trip).
A change is logged once per distinct change log being served (`Manifest.change_log`: a
bundle's own version, or the log a compacted bundle continues), so a bundle and the one
compacted from it, served side by side, read one ordered log and apply each change once.

`held` says what one bundle serves for an id: the live item, the bundle's row, or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from service import metrics
from service.catalog.bundle import Bundle
from service.catalog.changes import Change, Op
from service.catalog.feeds import LiveFeeds
from service.catalog.live import LiveItem
from service.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class HeldItem:
    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None
    source: Literal["bundle", "live"]
    available: bool
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Applied:
    count: int
    versions: dict[str, int]
    """Catalog version per bundle version after the change."""
    unknown_genres: tuple[str, ...] = ()


def held(bundle: Bundle, item_id: str) -> HeldItem | None:
    """What `bundle` serves (or hides) as `item_id`; None if unknown or deleted."""
    live = bundle.live
    item = live.item(item_id)
    available = not live.hidden(item_id)
    if item is not None:
        return HeldItem(
            item.item_id, item.title, item.genres, item.year, "live", available,
            dict(item.attributes),
        )  # fmt: skip
    row = bundle.catalog.rows.get(item_id)
    if row is None or live.deleted(item_id):
        return None
    _, title, genres = bundle.catalog.describe(row)
    year = int(bundle.catalog.years[row]) or None
    attributes = bundle.catalog.attributes(row)
    return HeldItem(item_id, title, genres, year, "bundle", available, attributes)


def _distinct(bundles: Sequence[Bundle]) -> list[Bundle]:
    seen: dict[int, Bundle] = {}
    for bundle in bundles:
        seen.setdefault(id(bundle), bundle)
    return list(seen.values())


class CatalogEditor:
    def __init__(self, feeds: LiveFeeds) -> None:
        self._feeds = feeds

    async def _fresh(self, bundles: Sequence[Bundle]) -> None:
        for bundle in bundles:
            sync = self._feeds.sync(bundle)
            version = await self._feeds.version(bundle)
            if sync is not None and version is not None:
                await sync.catch_up(version)

    async def _log(self, bundles: Sequence[Bundle], changes: Sequence[Change]) -> dict[str, int]:
        logged: dict[str, int] = {}
        for bundle in bundles:
            name = bundle.manifest.change_log
            if name not in logged:
                logged[name] = await self._feeds.changes.append(name, changes)
        versions = {bundle.version: logged[bundle.manifest.change_log] for bundle in bundles}
        for bundle in bundles:
            sync = self._feeds.sync(bundle)
            if sync is not None:
                await sync.catch_up(versions[bundle.version])
        return versions

    async def upsert(self, bundles: Sequence[Bundle], items: Sequence[LiveItem]) -> Applied:
        bundles = _distinct(bundles)
        unknown = [g for b in bundles[:1] for item in items for g in b.items.unknown_genres(item)]
        changes = [
            Change(
                "upsert",
                item.item_id,
                {
                    "title": item.title,
                    "genres": list(item.genres),
                    "year": item.year,
                    "attributes": dict(item.attributes),
                },
            )
            for item in items
        ]
        versions = await self._log(bundles, changes)
        metrics.CATALOG_CHANGES.labels("upsert").inc(len(items))
        if unknown:  # accepted: the tower embeds the item without them
            metrics.CATALOG_UNKNOWN_GENRES.inc(len(unknown))
        return Applied(len(items), versions, tuple(sorted(set(unknown))))

    async def _change_known(
        self, bundles: Sequence[Bundle], item_id: str, op: Op, body: dict[str, object]
    ) -> Applied:
        """404 unless some served bundle holds `item_id` (after catching up with the log)."""
        bundles = _distinct(bundles)
        await self._fresh(bundles)
        if all(held(bundle, item_id) is None for bundle in bundles):
            raise NotFoundError(f"item {item_id!r} is not in the catalog", field="item_id")
        versions = await self._log(bundles, [Change(op, item_id, body)])
        metrics.CATALOG_CHANGES.labels(op).inc()
        return Applied(1, versions)

    async def delete(self, bundles: Sequence[Bundle], item_id: str) -> Applied:
        return await self._change_known(bundles, item_id, "delete", {})

    async def set_available(
        self, bundles: Sequence[Bundle], item_id: str, available: bool
    ) -> Applied:
        return await self._change_known(bundles, item_id, "available", {"available": available})
