from __future__ import annotations

import zlib

import numpy as np

from models.features import (
    build_item_features,
    history_matrix,
    title_tokens,
    user_index,
    user_sequences,
)
from models.types import Interactions, Items


def _hash(word: str) -> int:
    return zlib.crc32(word.encode()) % 50_000 + 1


def test_title_tokens_drop_year_suffix_lowercase_and_pad() -> None:
    tokens = title_tokens("Toy Story 2 (1999)")
    assert tokens[:3] == [_hash("toy"), _hash("story"), _hash("2")]
    assert tokens[3:] == [0] * 13
    assert title_tokens("Toy Story 2") == tokens


def test_title_tokens_truncate_to_max_tokens() -> None:
    tokens = title_tokens(" ".join(f"w{i}" for i in range(30)), max_tokens=4, buckets=10)
    assert len(tokens) == 4
    assert all(1 <= t <= 10 for t in tokens)


def test_item_features_follow_the_contract() -> None:
    items = Items(
        ids=["1", "2", "3"],
        titles=["Alien (1979)", "Heat", "Up (2009)"],
        genres=[("Horror", "Sci-Fi"), ("Action",), ()],
        years=np.array([1979, 0, 2009], dtype=np.int64),
    )
    features = build_item_features(items)
    assert features.genre_vocab == ["Action", "Horror", "Sci-Fi"]
    assert features.genres.tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert features.year_mean == 1994.0
    assert features.year_std == 15.0
    assert np.allclose(features.year, [-1.0, 0.0, 1.0, 0.0])
    assert features.title_tokens[0, 0] == _hash("alien")
    assert not features.title_tokens[3].any()  # the unknown-item row
    assert features.num_items == 3


def test_user_sequences_and_history_matrix_are_right_aligned() -> None:
    interactions = Interactions(
        user=np.array([0, 0, 0, 2], dtype=np.int64),
        item=np.array([5, 6, 7, 1], dtype=np.int64),
        timestamp=np.array([1, 2, 3, 1], dtype=np.int64),
        weight=np.ones(4, dtype=np.float32),
    )
    sequences = user_sequences(interactions, 3)
    assert [s.tolist() for s in sequences] == [[5, 6, 7], [], [1]]
    matrix = history_matrix(sequences, history_length=2, padding_idx=9)
    assert matrix.tolist() == [[6, 7], [9, 9], [9, 1]]
    assert user_index(np.array([0, 2])).tolist() == [1, 3]
