"""The live catalog delta: items added or changed since the bundle was built, and tombstones.

A bundle is immutable; the delta sits beside it. New and updated items live in a small exact
index (a float32 matrix grown in chunks, searched by one matmul + argpartition, with filters
as per-genre and year columns beside it, so a search does no per-item Python work), and every
bundle row that was deleted, hidden or superseded by an update is tombstoned, so searches
exclude it and an updated item never comes back twice. Plain arrays and ids in and out: the
retriever takes `tombstoned_rows()` as exclusions and `merge` joins the two result lists.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from service.catalog.filters import Allowed, ItemFilter
from service.catalog.retriever import DEFAULT_SEARCH, Retriever, SearchSettings

Vector = npt.NDArray[np.float32]
_CHUNK = 1_024


class RowLookup(Protocol):
    """Bundle item id -> row (the catalog's `IdTable` or a plain dict)."""

    def get(self, key: str, default: Any = None) -> Any: ...


class Strings(Protocol):
    """Bundle row -> item id (the catalog's `StringColumn` or a plain list)."""

    def __getitem__(self, row: int) -> str: ...


@dataclass(frozen=True, slots=True)
class LiveItem:
    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None = None
    attributes: Mapping[str, object] = field(default_factory=dict)


class LiveDelta:
    """Mutable delta over one bundle; `bundle_rows` maps the bundle's item ids to rows.

    Not thread-safe by itself: one writer (the change applier) per process, and searches run on
    the event loop between applies.
    """

    def __init__(self, bundle_rows: RowLookup, dim: int) -> None:
        self._bundle_rows = bundle_rows
        self._dim = dim
        self._matrix: Vector = np.zeros((0, dim), dtype=np.float32)
        self._active = np.zeros(0, dtype=np.bool_)  # slot holds a visible item
        self._years = np.zeros(0, dtype=np.int32)  # 0 = unknown year (fails year filters)
        self._genres: dict[str, npt.NDArray[np.bool_]] = {}  # genre -> slots that have it
        self._ids: list[str | None] = []  # slot -> item id; None = freed slot
        self._slots: dict[str, int] = {}
        self._items: dict[str, LiveItem] = {}
        self._hidden: set[str] = set()
        self._tombstones: set[int] = set()
        self._frozen: frozenset[int] = frozenset()
        self.applied = 0  # position of the last change applied (set by the applier)

    def __len__(self) -> int:
        return len(self._slots)

    def upsert(self, item: LiveItem, embedding: Vector) -> None:
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if vector.shape != (self._dim,):
            raise ValueError(f"embedding of {item.item_id} has shape {vector.shape}")
        slot = self._slots.get(item.item_id)
        if slot is None:
            slot = len(self._ids)
            if slot >= len(self._matrix):
                self._grow()
            self._ids.append(item.item_id)
            self._slots[item.item_id] = slot
        self._matrix[slot] = vector
        self._active[slot] = item.item_id not in self._hidden
        self._years[slot] = item.year or 0
        for column in self._genres.values():
            column[slot] = False
        for genre in item.genres:
            if genre not in self._genres:
                self._genres[genre] = np.zeros(len(self._matrix), dtype=np.bool_)
            self._genres[genre][slot] = True
        self._items[item.item_id] = item
        self._tombstone(item.item_id)

    def _grow(self) -> None:
        def longer(column: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return np.concatenate([column, np.zeros(_CHUNK, dtype=column.dtype)])

        grown = np.zeros((len(self._matrix) + _CHUNK, self._dim), dtype=np.float32)
        grown[: len(self._matrix)] = self._matrix
        self._matrix = grown
        self._active = longer(self._active)
        self._years = longer(self._years)
        self._genres = {genre: longer(column) for genre, column in self._genres.items()}

    def _mask(self, used: int, item_filter: ItemFilter | None) -> npt.NDArray[np.bool_]:
        """Visible slots passing `item_filter`, with the bundle's semantics (filters.FilterMasks):
        an unknown year fails any year bound."""
        mask = self._active[:used].copy()
        if item_filter is None or item_filter.is_empty():
            return mask
        if item_filter.genres_any:
            any_of = np.zeros(used, dtype=np.bool_)
            for genre in item_filter.genres_any & self._genres.keys():
                any_of |= self._genres[genre][:used]
            mask &= any_of
        for genre in item_filter.genres_none & self._genres.keys():
            mask &= ~self._genres[genre][:used]
        years = self._years[:used]
        if item_filter.year_min is not None:
            mask &= (years > 0) & (years >= item_filter.year_min)
        if item_filter.year_max is not None:
            mask &= (years > 0) & (years <= item_filter.year_max)
        return mask

    def delete(self, item_id: str) -> None:
        """Gone from both the delta and the bundle (a later upsert brings it back)."""
        slot = self._slots.pop(item_id, None)
        if slot is not None:
            self._ids[slot] = None
            self._matrix[slot] = 0.0
            self._active[slot] = False
        self._items.pop(item_id, None)
        self._hidden.discard(item_id)
        self._tombstone(item_id)

    def set_available(self, item_id: str, available: bool) -> None:
        slot = self._slots.get(item_id)
        if slot is not None:
            self._active[slot] = available
        if available:
            self._hidden.discard(item_id)
            row = self._bundle_rows.get(item_id)
            if row is not None and item_id not in self._items:
                self._tombstones.discard(row)
                self._frozen = frozenset(self._tombstones)
        else:
            self._hidden.add(item_id)
            self._tombstone(item_id)

    def _tombstone(self, item_id: str) -> None:
        row = self._bundle_rows.get(item_id)
        if row is not None and row not in self._tombstones:
            self._tombstones.add(row)
            self._frozen = frozenset(self._tombstones)

    def tombstoned_rows(self) -> frozenset[int]:
        """Bundle rows every search must exclude (deleted, hidden or superseded)."""
        return self._frozen

    def item(self, item_id: str) -> LiveItem | None:
        return self._items.get(item_id)

    def hidden(self, item_id: str) -> bool:
        return item_id in self._hidden

    def live_items(self) -> list[LiveItem]:
        """Every live item, in the order first upserted (what a compaction appends)."""
        return list(self._items.values())

    def vector(self, item_id: str) -> Vector | None:
        """The live item's embedding (a view; None if `item_id` is not live)."""
        slot = self._slots.get(item_id)
        return None if slot is None else self._matrix[slot]

    def deleted(self, item_id: str) -> bool:
        """A bundle item deleted live (not merely hidden or superseded by an update)."""
        row = self._bundle_rows.get(item_id)
        return (
            row is not None
            and row in self._tombstones
            and item_id not in self._items
            and item_id not in self._hidden
        )

    def is_empty(self) -> bool:
        """No live item and no tombstone: searches need not look at the delta at all."""
        return not self._slots and not self._tombstones

    def search_delta(
        self,
        query: Vector,
        k: int,
        item_filter: ItemFilter | None = None,
        excluded_ids: Collection[str] = (),
    ) -> list[tuple[str, float]]:
        """Exact top-`k` live items by inner product, best first, filters and exclusions applied."""
        used = len(self._ids)
        if k <= 0 or not self._slots:
            return []
        allowed = self._mask(used, item_filter)
        for item_id in excluded_ids:
            slot = self._slots.get(item_id)
            if slot is not None:
                allowed[slot] = False
        scores = self._matrix[:used] @ np.asarray(query, dtype=np.float32).reshape(-1)
        scores[~allowed] = -np.inf
        top = np.argpartition(scores, used - k)[used - k :] if k < used else np.arange(used)
        top = top[allowed[top]]  # fewer than k qualify: the -inf ones drop out here
        order = top[np.argsort(-scores[top], kind="stable")]
        pairs = zip(order.tolist(), scores[order].tolist(), strict=True)
        return [(str(self._ids[slot]), score) for slot, score in pairs]


def merge(
    bundle: list[tuple[str, float]], live: list[tuple[str, float]], k: int
) -> list[tuple[str, float]]:
    """Both best-first lists joined by score, first `k`; exactly k whenever k qualify.

    The bundle side must already exclude `tombstoned_rows()`, so an id appears at most once.
    """
    out: list[tuple[str, float]] = []
    i = j = 0
    while len(out) < k and (i < len(bundle) or j < len(live)):
        if j >= len(live) or (i < len(bundle) and bundle[i][1] >= live[j][1]):
            out.append(bundle[i])
            i += 1
        else:
            out.append(live[j])
            j += 1
    return out


def search_with_delta(
    retriever: Retriever,
    item_ids: Strings,
    delta: LiveDelta,
    query: Vector,
    k: int,
    *,
    excluded_rows: Collection[int] = (),
    allowed: Allowed | None = None,
    item_filter: ItemFilter | None = None,
    excluded_ids: Collection[str] = (),
    settings: SearchSettings = DEFAULT_SEARCH,
) -> list[tuple[str, float]]:
    """Bundle search minus tombstones, joined with the delta's: the one call to wire in.

    `allowed` is the bundle's mask for `item_filter`; the delta applies the same filter itself.
    """
    tombstones = delta.tombstoned_rows()
    excluded = set(excluded_rows) | tombstones if tombstones else excluded_rows
    rows, scores = retriever.search(query, k, excluded=excluded, allowed=allowed, settings=settings)
    bundle = [(item_ids[r], s) for r, s in zip(rows, scores, strict=True)]
    return merge(bundle, delta.search_delta(query, k, item_filter, excluded_ids), k)
