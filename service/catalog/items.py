"""One bundle's catalog: items and users by row, over memory-mapped columns.

Nothing here holds a Python object per item. Rows are decoded on demand; the rows a response
names sit in a small LRU (`describe`), since popular items come back in most pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from service.catalog.columns import IdTable, StringColumn, int_view
from service.catalog.filters import FilterMasks
from service.catalog.manifest import Manifest
from service.errors import BundleError

DESCRIBE_CACHE = 16_384
ItemFacts = tuple[str, str, tuple[str, ...]]
"""(item id, title, genres) of one row."""


class PopularityRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    item_id: str
    score: float = Field(allow_inf_nan=False)


_POPULARITY = TypeAdapter(list[PopularityRecord])

CATALOG_FILES = (
    *(f"item_ids{s}.npy" for s in ("", ".offsets", ".hash", ".order")),
    *(f"user_ids{s}.npy" for s in ("", ".offsets", ".hash", ".order")),
    "item_titles.npy",
    "item_titles.offsets.npy",
    "item_genres.npy",
    "item_genres.offsets.npy",
    "item_years.npy",
    "popularity.json",
)


class GenreColumn(Sequence[tuple[str, ...]]):
    """Genres by row: codes into the manifest's vocabulary, CSR over rows."""

    def __init__(
        self, vocab: tuple[str, ...], codes: npt.NDArray[np.uint16], offsets: npt.NDArray[np.int64]
    ) -> None:
        if codes.dtype != np.uint16 or codes.ndim != 1:
            raise BundleError("item_genres.npy must be a uint16 vector")
        if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) < 1:
            raise BundleError("item_genres.offsets.npy must be an int64 vector")
        if offsets[0] != 0 or offsets[-1] != len(codes) or np.any(np.diff(offsets) < 0):
            raise BundleError("item_genres.offsets.npy does not partition item_genres.npy")
        if len(codes) and int(codes.max()) >= len(vocab):
            raise BundleError("item_genres.npy holds codes outside catalog.genre_vocab")
        self.vocab = vocab
        self.codes = codes
        self.offsets = offsets
        self._bounds = int_view(offsets)
        self._codes = int_view(codes)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: Any) -> Any:
        if not isinstance(row, int) or not 0 <= row < len(self):
            raise IndexError(row)
        vocab = self.vocab
        return tuple(vocab[c] for c in self._codes[self._bounds[row] : self._bounds[row + 1]])

    def rows_with(self, code: int) -> npt.NDArray[np.int64]:
        """Every row holding genre `code` (load time: one pass over the codes)."""
        positions = np.flatnonzero(self.codes == code)
        return np.searchsorted(self.offsets, positions, side="right").astype(np.int64) - 1


@dataclass(frozen=True, slots=True)
class Catalog:
    """Items and users of one bundle, by row. `rows` and `users` are read-only Mappings."""

    item_ids: StringColumn
    titles: StringColumn
    genres: GenreColumn
    years: npt.NDArray[np.int32]
    rows: IdTable
    users: IdTable
    popularity_rows: npt.NDArray[np.int64]
    popularity_scores: npt.NDArray[np.float32]
    masks: FilterMasks
    describe: Callable[[int], ItemFacts] = field(repr=False)
    attribute_column: StringColumn | None = None
    """Compacted bundles: each row's attributes as JSON ("" = none)."""

    def __len__(self) -> int:
        return len(self.item_ids)

    def attributes(self, row: int) -> dict[str, object]:
        """The row's attributes (items added live keep theirs through a compaction)."""
        raw = self.attribute_column[row] if self.attribute_column is not None else ""
        value = json.loads(raw) if raw else {}
        return dict(value) if isinstance(value, dict) else {}


def load_catalog(root: Path, manifest: Manifest, npy: Callable[[str], Any]) -> Catalog:
    """The catalog of a verified bundle; `npy(name)` maps one verified array file."""
    n = manifest.num_items
    item_ids = StringColumn(npy("item_ids.npy"), npy("item_ids.offsets.npy"), "item_ids")
    titles = StringColumn(npy("item_titles.npy"), npy("item_titles.offsets.npy"), "item_titles")
    vocab = tuple(manifest.catalog.genre_vocab)
    genres = GenreColumn(vocab, npy("item_genres.npy"), npy("item_genres.offsets.npy"))
    years = npy("item_years.npy")
    if years.dtype != np.int32 or years.shape != (n,):
        raise BundleError(f"item_years.npy must be int32 [{n}]")
    if len(item_ids) != n or len(titles) != n or len(genres) != n:
        raise BundleError(f"item_ids / item_titles / item_genres do not hold {n} items")
    rows = IdTable(item_ids, npy("item_ids.hash.npy"), npy("item_ids.order.npy"), "item_ids")
    user_ids = StringColumn(npy("user_ids.npy"), npy("user_ids.offsets.npy"), "user_ids")
    if len(user_ids) != manifest.num_users:
        raise BundleError(f"user_ids holds {len(user_ids)} users, manifest {manifest.num_users}")
    users = IdTable(
        user_ids, npy("user_ids.hash.npy"), npy("user_ids.order.npy"), "user_ids", base=1
    )
    try:
        popularity = _POPULARITY.validate_json((root / "popularity.json").read_bytes())
    except ValidationError as exc:
        raise BundleError(f"popularity.json is invalid: {exc}") from exc
    known = [(row, p.score) for p in popularity if (row := rows.get_row(p.item_id)) is not None]
    pop_rows = np.array([r for r, _ in known], dtype=np.int64)
    pop_scores = np.array([s for _, s in known], dtype=np.float32)
    for array in (pop_rows, pop_scores):
        array.flags.writeable = False

    attributes = None
    if (name := manifest.catalog.attributes) is not None:
        attributes = StringColumn(npy(f"{name}.npy"), npy(f"{name}.offsets.npy"), name)
        if len(attributes) != n:
            raise BundleError(f"{name} does not hold {n} items")

    @lru_cache(maxsize=DESCRIBE_CACHE)
    def describe(row: int) -> ItemFacts:
        return item_ids[row], titles[row], genres[row]

    return Catalog(
        item_ids=item_ids,
        titles=titles,
        genres=genres,
        years=years,
        rows=rows,
        users=users,
        popularity_rows=pop_rows,
        popularity_scores=pop_scores,
        masks=FilterMasks.from_columns(genres, years),
        describe=describe,
        attribute_column=attributes,
    )
