"""Filter bitmaps: per-genre bitmaps combined per filter, memoised, counts exact."""

from __future__ import annotations

import numpy as np
import pytest

from service.catalog.filters import Allowed, FilterMasks, ItemFilter, pack, rows_bitmap

GENRES = ("Comedy", "Drama", "Horror")
MATRIX = np.array(
    [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=np.bool_
)  # fmt: skip
YEARS = np.array([1990, 2000, 0, 2010, 1995], dtype=np.int32)


def _masks() -> FilterMasks:
    bitmaps = {
        g: rows_bitmap(np.flatnonzero(MATRIX[:, c]), len(YEARS)) for c, g in enumerate(GENRES)
    }
    return FilterMasks(bitmaps, YEARS, len(YEARS))


def _rows(masks: FilterMasks, item_filter: ItemFilter) -> list[int]:
    allowed = masks.allowed(item_filter)
    assert allowed is not None
    rows = allowed.rows().tolist()
    assert allowed.count == len(rows)
    assert [r for r in range(len(YEARS)) if r in allowed] == rows
    return rows


def test_empty_filters_filter_nothing() -> None:
    masks = _masks()
    assert masks.allowed(None) is None
    assert masks.allowed(ItemFilter()) is None


def test_genres_any_and_none() -> None:
    masks = _masks()
    assert _rows(masks, ItemFilter(genres_any=frozenset({"Comedy", "Horror"}))) == [0, 2, 3, 4]
    assert _rows(masks, ItemFilter(genres_none=frozenset({"Drama"}))) == [0, 3]
    both = ItemFilter(genres_any=frozenset({"Drama"}), genres_none=frozenset({"Horror"}))
    assert _rows(masks, both) == [1, 2]


def test_unknown_genres_match_nothing_and_exclude_nothing() -> None:
    masks = _masks()
    assert _rows(masks, ItemFilter(genres_any=frozenset({"Western"}))) == []
    assert _rows(masks, ItemFilter(genres_none=frozenset({"Western"}))) == [0, 1, 2, 3, 4]


def test_year_bounds_drop_unknown_years() -> None:
    masks = _masks()
    assert _rows(masks, ItemFilter(year_min=1995)) == [1, 3, 4]
    assert _rows(masks, ItemFilter(year_min=1990, year_max=2000)) == [0, 1, 4]


def test_bitmaps_are_memoised_and_read_only() -> None:
    masks = _masks()
    first = masks.allowed(ItemFilter(year_min=1995))
    assert first is not None and first is masks.allowed(ItemFilter(year_min=1995))
    assert not first.bitmap.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first.bitmap[0] = 0


@pytest.mark.parametrize("size", [1, 63, 64, 65, 1000])
def test_counts_ignore_the_padding_bits(size: int) -> None:
    """The bitmap is padded to whole words for popcount; padding bits never count."""
    allowed = Allowed.of(pack(np.ones(size, dtype=np.bool_)), size)
    assert allowed.count == size and len(allowed.rows()) == size
    assert allowed.includes(np.arange(size)).all()
