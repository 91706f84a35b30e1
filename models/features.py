"""Tower inputs, computed exactly as docs/bundle-format.md specifies.

The service recomputes these features for items and histories it meets online, so any drift
between this module and the contract silently degrades serving: keep them in lock-step.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from models.types import FloatArray, IntArray, Interactions, Items

TITLE_HASH_BUCKETS = 50_000
TITLE_MAX_TOKENS = 16
HISTORY_LENGTH = 50

_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")


def title_tokens(
    title: str,
    *,
    buckets: int = TITLE_HASH_BUCKETS,
    max_tokens: int = TITLE_MAX_TOKENS,
) -> list[int]:
    """Hashed tokens of `title` without its "(year)" suffix, right-padded with 0."""
    words = _TOKEN.findall(_YEAR_SUFFIX.sub("", title).lower())[:max_tokens]
    hashed = [zlib.crc32(word.encode()) % buckets + 1 for word in words]
    return hashed + [0] * (max_tokens - len(hashed))


@dataclass(frozen=True)
class ItemFeatures:
    """Content features by item row; row `num_items` is the all-unknown item."""

    genre_vocab: list[str]
    genres: FloatArray  # [num_items + 1, len(genre_vocab)]
    year: FloatArray  # [num_items + 1]
    title_tokens: IntArray  # [num_items + 1, title_max_tokens]
    year_mean: float
    year_std: float
    title_hash_buckets: int = TITLE_HASH_BUCKETS
    title_max_tokens: int = TITLE_MAX_TOKENS

    @property
    def num_items(self) -> int:
        return int(self.year.shape[0]) - 1


def build_item_features(
    items: Items,
    *,
    title_hash_buckets: int = TITLE_HASH_BUCKETS,
    title_max_tokens: int = TITLE_MAX_TOKENS,
) -> ItemFeatures:
    """Genre multi-hot, normalised year (0 if unknown) and hashed title tokens per item row."""
    n = len(items)
    vocab = sorted({g for genres in items.genres for g in genres})
    position = {g: i for i, g in enumerate(vocab)}
    genres = np.zeros((n + 1, len(vocab)), dtype=np.float32)
    for row, item_genres in enumerate(items.genres):
        for g in item_genres:
            genres[row, position[g]] = 1.0

    years = np.asarray(items.years, dtype=np.float64)
    known = years > 0
    mean = float(years[known].mean()) if known.any() else 0.0
    std = float(years[known].std()) if known.sum() > 1 else 1.0
    std = std if std > 0 else 1.0
    year = np.zeros(n + 1, dtype=np.float32)
    year[:n][known] = ((years[known] - mean) / std).astype(np.float32)

    tokens = np.zeros((n + 1, title_max_tokens), dtype=np.int64)
    for row, title in enumerate(items.titles):
        tokens[row] = title_tokens(title, buckets=title_hash_buckets, max_tokens=title_max_tokens)
    return ItemFeatures(
        genre_vocab=vocab,
        genres=genres,
        year=year,
        title_tokens=tokens,
        year_mean=mean,
        year_std=std,
        title_hash_buckets=title_hash_buckets,
        title_max_tokens=title_max_tokens,
    )


def user_sequences(interactions: Interactions, num_users: int) -> list[IntArray]:
    """Each user's items in chronological order (interactions are sorted by user, time)."""
    order = np.argsort(interactions.user, kind="stable")
    users = interactions.user[order]
    items = interactions.item[order].astype(np.int64)
    bounds = np.searchsorted(users, np.arange(num_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(num_users)]


def history_matrix(sequences: list[IntArray], *, history_length: int, padding_idx: int) -> IntArray:
    """Last `history_length` items per user, oldest first, right-aligned, left-padded."""
    out = np.full((len(sequences), history_length), padding_idx, dtype=np.int64)
    for u, seq in enumerate(sequences):
        tail = seq[-history_length:]
        if len(tail):
            out[u, history_length - len(tail) :] = tail
    return out


def user_index(user_rows: IntArray) -> IntArray:
    """Dataset user row -> tower `user_idx` (0 is reserved for unknown users)."""
    return np.asarray(user_rows, dtype=np.int64) + 1
