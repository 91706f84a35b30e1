"""Catalog filters (genres, years) as packed bitmaps over item rows.

One bitmap per genre is built at load (N/8 bytes each). A request's filter combines them with
a few whole-array bit operations (no per-item Python work) and the result is memoised per
distinct filter, so a repeated filter costs a dict lookup. A year range is the one part that
scans the years column (vectorised, ~1 ms at 1M items), once per distinct filter.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

Bitmap = npt.NDArray[np.uint8]
MEMO_BYTES = 32 << 20  # bitmaps kept per worker, whatever the catalog size


@dataclass(frozen=True, slots=True)
class ItemFilter:
    genres_any: frozenset[str] = frozenset()
    genres_none: frozenset[str] = frozenset()
    year_min: int | None = None
    year_max: int | None = None

    def is_empty(self) -> bool:
        return (
            not self.genres_any
            and not self.genres_none
            and self.year_min is None
            and self.year_max is None
        )


def packed_size(size: int) -> int:
    """Bytes of a bitmap over `size` rows, rounded up to whole uint64 words (for popcount)."""
    return -(-size // 64) * 8


def pack(mask: npt.NDArray[np.bool_]) -> Bitmap:
    bitmap = np.zeros(packed_size(len(mask)), dtype=np.uint8)
    packed = np.packbits(mask, bitorder="little")
    bitmap[: len(packed)] = packed
    return bitmap


def rows_bitmap(rows: npt.NDArray[np.int64], size: int) -> Bitmap:
    mask = np.zeros(size, dtype=np.bool_)
    mask[rows] = True
    return pack(mask)


@dataclass(frozen=True, slots=True, eq=False)
class Allowed:
    """The rows a filter lets through: a read-only bitmap (FAISS `IDSelectorBitmap` layout,
    little bit order) and its population count; the row list itself only when asked."""

    bitmap: Bitmap
    count: int
    size: int
    _rows: list[npt.NDArray[np.int64]] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, bitmap: Bitmap, size: int) -> Allowed:
        bitmap.flags.writeable = False
        count = int(np.bitwise_count(bitmap.view(np.uint64)).sum())
        return cls(bitmap, count, size)

    def rows(self) -> npt.NDArray[np.int64]:
        """Allowed rows, ascending (memoised: the exact plan asks for them every request)."""
        if not self._rows:
            bits = np.unpackbits(self.bitmap, bitorder="little", count=self.size)
            rows = np.flatnonzero(bits).astype(np.int64)
            rows.flags.writeable = False
            self._rows.append(rows)
        return self._rows[0]

    def includes(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        bits = (self.bitmap[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1
        return np.asarray(bits, dtype=np.bool_)

    def __contains__(self, row: object) -> bool:
        return isinstance(row, int) and bool((self.bitmap[row >> 3] >> (row & 7)) & 1)


class GenreRows(Protocol):
    """What `from_columns` needs of the genre column (GenreColumn in service/catalog/items.py)."""

    @property
    def vocab(self) -> tuple[str, ...]: ...

    def rows_with(self, code: int) -> npt.NDArray[np.int64]: ...


class FilterMasks:
    """Per-genre bitmaps, built once per bundle; combined and memoised per distinct filter."""

    def __init__(
        self, genre_bitmaps: dict[str, Bitmap], years: npt.NDArray[np.int32], size: int
    ) -> None:
        self._genres = genre_bitmaps
        self._years = years
        self.size = size
        self._empty = np.zeros(packed_size(size), dtype=np.uint8)
        self._all = pack(np.ones(size, dtype=np.bool_))  # padding bits clear: counts stay exact
        self._capacity = max(16, min(256, MEMO_BYTES // max(1, packed_size(size))))
        self._memo: OrderedDict[ItemFilter, Allowed] = OrderedDict()

    @classmethod
    def from_columns(cls, genres: GenreRows, years: npt.NDArray[np.int32]) -> FilterMasks:
        size = len(years)
        bitmaps = {}
        for code, genre in enumerate(genres.vocab):
            bitmap = rows_bitmap(genres.rows_with(code), size)
            bitmap.flags.writeable = False
            bitmaps[genre] = bitmap
        return cls(bitmaps, years, size)

    def allowed(self, item_filter: ItemFilter | None) -> Allowed | None:
        """Rows passing the filter, or None when nothing is filtered."""
        if item_filter is None or item_filter.is_empty():
            return None
        allowed = self._memo.get(item_filter)
        if allowed is None:
            allowed = Allowed.of(self._build(item_filter), self.size)
            self._memo[item_filter] = allowed
            if len(self._memo) > self._capacity:
                self._memo.popitem(last=False)
        else:
            self._memo.move_to_end(item_filter)
        return allowed

    def _union(self, genres: frozenset[str]) -> Bitmap:
        """Unknown genres match nothing: a filter naming only those allows no row."""
        union = self._empty.copy()
        for genre in genres:
            known = self._genres.get(genre)
            if known is not None:
                union |= known
        return union

    def _build(self, f: ItemFilter) -> Bitmap:
        bitmap = self._union(f.genres_any) if f.genres_any else self._all.copy()
        if f.genres_none:
            bitmap &= ~self._union(f.genres_none)
        if f.year_min is not None or f.year_max is not None:
            years = self._years
            keep = years > 0
            if f.year_min is not None:
                keep &= years >= f.year_min
            if f.year_max is not None:
                keep &= years <= f.year_max
            bitmap &= pack(keep)
        return bitmap
