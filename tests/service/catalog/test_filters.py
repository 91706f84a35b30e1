from __future__ import annotations

import numpy as np

from service.catalog.filters import FilterMasks, ItemFilter

GENRES = ("Comedy", "Drama", "Horror")
MATRIX = np.array(
    [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=np.bool_
)  # fmt: skip
YEARS = np.array([1990, 2000, 0, 2010, 1995], dtype=np.int32)


def _rows(masks: FilterMasks, item_filter: ItemFilter) -> list[int]:
    mask = masks.allowed(item_filter)
    assert mask is not None
    return np.flatnonzero(mask).tolist()


def test_empty_filters_filter_nothing() -> None:
    masks = FilterMasks(GENRES, MATRIX, YEARS)
    assert masks.allowed(None) is None
    assert masks.allowed(ItemFilter()) is None


def test_genres_any_and_none() -> None:
    masks = FilterMasks(GENRES, MATRIX, YEARS)
    assert _rows(masks, ItemFilter(genres_any=frozenset({"Comedy", "Horror"}))) == [0, 2, 3, 4]
    assert _rows(masks, ItemFilter(genres_none=frozenset({"Drama"}))) == [0, 3]
    both = ItemFilter(genres_any=frozenset({"Drama"}), genres_none=frozenset({"Horror"}))
    assert _rows(masks, both) == [1, 2]


def test_unknown_genres_match_nothing_and_exclude_nothing() -> None:
    masks = FilterMasks(GENRES, MATRIX, YEARS)
    assert _rows(masks, ItemFilter(genres_any=frozenset({"Western"}))) == []
    assert _rows(masks, ItemFilter(genres_none=frozenset({"Western"}))) == [0, 1, 2, 3, 4]


def test_year_bounds_drop_unknown_years() -> None:
    masks = FilterMasks(GENRES, MATRIX, YEARS)
    assert _rows(masks, ItemFilter(year_min=1995)) == [1, 3, 4]
    assert _rows(masks, ItemFilter(year_min=1990, year_max=2000)) == [0, 1, 4]


def test_masks_are_memoised_and_read_only() -> None:
    masks = FilterMasks(GENRES, MATRIX, YEARS, capacity=1)
    first = masks.allowed(ItemFilter(year_min=1995))
    assert first is masks.allowed(ItemFilter(year_min=1995))
    assert first is not None and not first.flags.writeable
    masks.allowed(ItemFilter(year_max=1995))  # evicts the first (capacity 1)
    assert masks.allowed(ItemFilter(year_min=1995)) is not first
