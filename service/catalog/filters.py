"""Catalog filters (genres, years) as boolean masks over item rows, memoised per bundle."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]


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


class FilterMasks:
    """Builds and remembers the allowed-rows mask of each distinct filter (a small LRU)."""

    def __init__(
        self,
        genre_vocab: tuple[str, ...],
        genre_matrix: Mask,
        years: npt.NDArray[np.int32],
        capacity: int = 256,
    ) -> None:
        self._genre_column = {genre: col for col, genre in enumerate(genre_vocab)}
        self._genres = genre_matrix
        self._years = years
        self._capacity = capacity
        self._memo: OrderedDict[ItemFilter, Mask] = OrderedDict()

    def allowed(self, item_filter: ItemFilter | None) -> Mask | None:
        """Rows passing the filter (read-only), or None when nothing is filtered."""
        if item_filter is None or item_filter.is_empty():
            return None
        mask = self._memo.get(item_filter)
        if mask is None:
            mask = self._build(item_filter)
            mask.flags.writeable = False
            self._memo[item_filter] = mask
            if len(self._memo) > self._capacity:
                self._memo.popitem(last=False)
        return mask

    def _columns(self, genres: frozenset[str]) -> list[int]:
        return [self._genre_column[g] for g in genres if g in self._genre_column]

    def _build(self, f: ItemFilter) -> Mask:
        mask = np.ones(len(self._years), dtype=np.bool_)
        if f.genres_any:
            mask &= self._genres[:, self._columns(f.genres_any)].any(axis=1)
        if f.genres_none:
            mask &= ~self._genres[:, self._columns(f.genres_none)].any(axis=1)
        if f.year_min is not None:
            mask &= (self._years >= f.year_min) & (self._years > 0)
        if f.year_max is not None:
            mask &= (self._years <= f.year_max) & (self._years > 0)
        return mask
