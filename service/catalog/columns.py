"""Catalog columns read straight from memory-mapped `.npy` files: strings and id lookups.

Why not Python objects: a dict of a million ids costs ~150 MB in every worker, and tuples of
titles as much again. These columns stay in the page cache, shared by every worker on the
machine; a lookup costs a hash and a binary search (~1 µs), and the hot ids sit in a small LRU.

Layout (written by `models/`, see docs/bundle-format.md):
- strings: `NAME.npy` (uint8, the UTF-8 bytes of every value, concatenated) and
  `NAME.offsets.npy` (int64 `[n + 1]`, value `i` is bytes `offsets[i]:offsets[i + 1]`);
- id lookup: `NAME.hash.npy` (uint64 `[n]`, `id_hash` of every id, sorted) and
  `NAME.order.npy` (int64 `[n]`, the row of each sorted hash).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import BundleError

LOOKUP_CACHE = 65_536


def id_hash(value: str) -> int:
    """64-bit key of an id: blake2b, stable across processes (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def int_view(array: npt.NDArray[Any]) -> memoryview:
    """A memoryview whose items are Python ints: indexing it skips numpy's scalar boxing."""
    contiguous: Any = np.ascontiguousarray(array).view(np.ndarray)
    return memoryview(contiguous)


class StringColumn:
    """Read-only strings by row over a byte blob and its offsets."""

    def __init__(self, blob: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], name: str):
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise BundleError(f"{name}.npy must be a uint8 vector")
        if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 1:
            raise BundleError(f"{name}.offsets.npy must be an int64 vector")
        if offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
            raise BundleError(f"{name}.offsets.npy does not partition {name}.npy")
        self._blob = int_view(blob)
        self._offsets = int_view(offsets)
        self._size = len(offsets) - 1

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, row: int) -> str:
        value: str = self.raw(row).tobytes().decode()
        return value

    def raw(self, row: int) -> memoryview:
        if not 0 <= row < self._size:
            raise IndexError(row)
        part: memoryview = self._blob[self._offsets[row] : self._offsets[row + 1]]
        return part

    def __iter__(self) -> Iterator[str]:
        return (self[row] for row in range(self._size))


class IdTable(Mapping[str, int]):
    """id -> row (+ `base`) over a `StringColumn` and its sorted hashes; a read-only Mapping.

    `base` lets user ids map to `user_idx = row + 1` (0 is the out-of-vocabulary bucket).
    """

    def __init__(
        self,
        ids: StringColumn,
        hashes: npt.NDArray[np.uint64],
        order: npt.NDArray[np.int64],
        name: str,
        *,
        base: int = 0,
    ) -> None:
        n = len(ids)
        if hashes.dtype != np.uint64 or hashes.shape != (n,):
            raise BundleError(f"{name}.hash.npy must be uint64 [{n}]")
        if order.dtype != np.int64 or order.shape != (n,):
            raise BundleError(f"{name}.order.npy must be int64 [{n}]")
        if n and (np.any(hashes[1:] < hashes[:-1]) or order.min() < 0 or order.max() >= n):
            raise BundleError(f"{name}.hash.npy is not sorted or {name}.order.npy out of range")
        if n and np.bincount(order, minlength=n).max() != 1:
            raise BundleError(f"{name}.order.npy is not a permutation")
        self.ids = ids
        self._hashes = int_view(hashes)
        self._order = int_view(order)
        self._base = base
        self.get_row = lru_cache(maxsize=LOOKUP_CACHE)(self._find)
        self._check_unique(hashes, name)

    def _check_unique(self, hashes: npt.NDArray[np.uint64], name: str) -> None:
        """Equal hashes are legal (a collision) but equal ids are not."""
        for position in np.flatnonzero(hashes[1:] == hashes[:-1]).tolist():
            first, second = self._order[position], self._order[position + 1]
            if self.ids.raw(first) == self.ids.raw(second):
                raise BundleError(f"{name}: duplicate id {self.ids[first]!r}")

    def _find(self, key: str) -> int | None:
        encoded = key.encode()
        wanted = id_hash(key)
        position = bisect.bisect_left(self._hashes, wanted)
        while position < len(self._hashes) and self._hashes[position] == wanted:
            row: int = self._order[position]
            if self.ids.raw(row) == encoded:
                return row
            position += 1
        return None

    def __getitem__(self, key: str) -> int:
        row = self.get_row(key) if isinstance(key, str) else None
        if row is None:
            raise KeyError(key)
        return row + self._base

    def get(self, key: str, default: Any = None) -> Any:
        row = self.get_row(key) if isinstance(key, str) else None
        return default if row is None else row + self._base

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get_row(key) is not None

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def rows(self, keys: Iterable[str]) -> list[int]:
        """Rows of the known keys, in order; unknown keys are skipped."""
        get, base = self.get_row, self._base
        return [row + base for key in keys if (row := get(key)) is not None]


def read_strings(root: Path, name: str) -> list[str]:
    """Every value of a bundle's string column, e.g. `item_ids` (tools and tests; O(n))."""
    blob = np.load(root / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    offsets = np.load(root / f"{name}.offsets.npy", mmap_mode="r", allow_pickle=False)
    return list(StringColumn(blob, offsets, name))
