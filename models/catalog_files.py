"""The bundle's catalog as columnar `.npy` files, so the service can memory-map them.

A JSON list of a million item records parses into a million Python objects in every worker;
these arrays are mapped read-only and shared through the page cache instead. The layout and the
id hash are the contract in docs/bundle-format.md ("Catalog columns"); the service reads them in
service/catalog/columns.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.types import Dataset

GENRE_CODE = np.uint16
_ID_FILES = ("", ".offsets", ".hash", ".order")
CATALOG_FILES = (
    *(f"item_ids{suffix}.npy" for suffix in _ID_FILES),
    *(f"user_ids{suffix}.npy" for suffix in _ID_FILES),
    "item_titles.npy",
    "item_titles.offsets.npy",
    "item_genres.npy",
    "item_genres.offsets.npy",
    "item_years.npy",
)
"""Every file `write_catalog` writes."""


def id_hash(value: str) -> int:
    """64-bit key of an id (blake2b, little-endian): the service computes the same."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def _save(path: Path, array: np.ndarray) -> None:
    np.save(path, array, allow_pickle=False)


def write_strings(directory: Path, name: str, values: Sequence[str]) -> None:
    """`NAME.npy` (UTF-8 bytes, concatenated) and `NAME.offsets.npy` (int64 [n + 1])."""
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    _save(directory / f"{name}.npy", np.frombuffer(b"".join(encoded), dtype=np.uint8))
    _save(directory / f"{name}.offsets.npy", offsets)


def write_ids(directory: Path, name: str, ids: Sequence[str]) -> None:
    """Strings plus the lookup: `NAME.hash.npy` (sorted uint64) and `NAME.order.npy` (rows)."""
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: duplicate ids")
    write_strings(directory, name, ids)
    hashes = np.fromiter((id_hash(i) for i in ids), dtype=np.uint64, count=len(ids))
    order = np.argsort(hashes, kind="stable").astype(np.int64)
    _save(directory / f"{name}.hash.npy", hashes[order])
    _save(directory / f"{name}.order.npy", order)


def write_item_columns(
    directory: Path,
    ids: Sequence[str],
    titles: Sequence[str],
    genres: Sequence[Sequence[str]],
    years: Sequence[int] | np.ndarray,
) -> dict[str, Any]:
    """The item columns (ids, titles, genres, years); returns the `catalog` section."""
    vocab = sorted({genre for row in genres for genre in row})
    if len(vocab) > np.iinfo(GENRE_CODE).max:
        raise ValueError(f"{len(vocab)} distinct genres: at most 65535 are supported")
    column = {genre: code for code, genre in enumerate(vocab)}
    write_ids(directory, "item_ids", ids)
    write_strings(directory, "item_titles", titles)
    codes = np.fromiter(
        (column[g] for row in genres for g in row),
        dtype=GENRE_CODE,
        count=sum(len(row) for row in genres),
    )
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in genres], out=offsets[1:])
    _save(directory / "item_genres.npy", codes)
    _save(directory / "item_genres.offsets.npy", offsets)
    _save(directory / "item_years.npy", np.asarray(years, dtype=np.int32))
    return {"genre_vocab": vocab}


def write_catalog(directory: Path, dataset: Dataset) -> dict[str, Any]:
    """Every catalog column of `dataset`; returns the manifest's `catalog` section."""
    items = dataset.items
    section = write_item_columns(directory, items.ids, items.titles, items.genres, items.years)
    write_ids(directory, "user_ids", dataset.user_ids)
    return section
