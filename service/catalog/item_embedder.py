"""Content-only embeddings of items the bundle has never seen, with the bundle's item tower.

The features mirror models/features.py exactly (genre multi-hot over the manifest's vocab,
year normalised by the manifest's mean/std with 0 for unknown, crc32-hashed title tokens
without the "(year)" suffix); the id input is the tower's unknown-item row, since a new item
has no learned id embedding. Unknown genres are dropped and counted by the caller.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.catalog.encoder import open_session
from service.catalog.live import LiveItem

if TYPE_CHECKING:
    from service.catalog.bundle import Bundle
    from service.catalog.manifest import Manifest

_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")


def title_tokens(title: str, buckets: int, max_tokens: int) -> list[int]:
    words = _TOKEN.findall(_YEAR_SUFFIX.sub("", title).lower())[:max_tokens]
    hashed = [zlib.crc32(word.encode()) % buckets + 1 for word in words]
    return hashed + [0] * (max_tokens - len(hashed))


class ItemEmbedder:
    """LiveItem -> L2-normalised embedding from the bundle's `item_tower.onnx`."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        genre_vocab: Sequence[str],
        year_mean: float,
        year_std: float,
        title_hash_buckets: int,
        title_max_tokens: int,
        unknown_item_idx: int,
    ) -> None:
        self._session = session
        self._genre_column = {g: i for i, g in enumerate(genre_vocab)}
        self._year_mean = year_mean
        self._year_std = year_std
        self._buckets = title_hash_buckets
        self._max_tokens = title_max_tokens
        self._unknown = unknown_item_idx

    @classmethod
    def for_bundle(cls, bundle: Bundle) -> ItemEmbedder:
        """The bundle's item tower (already verified at load) with its manifest's feature spec."""
        session = open_session(bundle.path / bundle.manifest.item_tower.file, bundle.manifest.files)
        return cls.for_manifest(session, bundle.manifest)

    @classmethod
    def for_manifest(cls, session: ort.InferenceSession, manifest: Manifest) -> ItemEmbedder:
        """An item tower session the loader verified, with the manifest's feature spec."""
        spec = manifest.item_tower
        return cls(
            session,
            genre_vocab=spec.genre_vocab,
            year_mean=spec.year_mean,
            year_std=spec.year_std,
            title_hash_buckets=spec.title_hash_buckets,
            title_max_tokens=spec.title_max_tokens,
            unknown_item_idx=manifest.user_tower.padding_idx,  # num_items unless compacted
        )

    def unknown_genres(self, item: LiveItem) -> list[str]:
        return [g for g in item.genres if g not in self._genre_column]

    def features(
        self, items: Sequence[LiveItem], item_idx: Sequence[int] | None = None
    ) -> dict[str, npt.NDArray[np.int64] | npt.NDArray[np.float32]]:
        n = len(items)
        genres = np.zeros((n, len(self._genre_column)), dtype=np.float32)
        year = np.zeros(n, dtype=np.float32)
        tokens = np.zeros((n, self._max_tokens), dtype=np.int64)
        for row, item in enumerate(items):
            for g in item.genres:
                col = self._genre_column.get(g)
                if col is not None:
                    genres[row, col] = 1.0
            if item.year is not None and item.year > 0:
                year[row] = np.float32((float(item.year) - self._year_mean) / self._year_std)
            tokens[row] = title_tokens(item.title, self._buckets, self._max_tokens)
        ids = [self._unknown] * n if item_idx is None else list(item_idx)
        return {
            "item_idx": np.asarray(ids, dtype=np.int64),
            "genres": genres,
            "year": year,
            "title_tokens": tokens,
        }

    def embed(
        self, items: Sequence[LiveItem], item_idx: Sequence[int] | None = None
    ) -> npt.NDArray[np.float32]:
        """[len(items), dim]; `item_idx` only for parity checks against bundle rows."""
        (out,) = self._session.run(None, self.features(items, item_idx))
        result: npt.NDArray[np.float32] = np.ascontiguousarray(out, dtype=np.float32)
        return result
