"""Recall@K / NDCG@K against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.metrics import evaluate_ranking
from models.types import FloatArray, IntArray, Interactions, Split


def _log(pairs: list[tuple[int, int]]) -> Interactions:
    return Interactions(
        user=np.array([u for u, _ in pairs], dtype=np.int64),
        item=np.array([i for _, i in pairs], dtype=np.int64),
        timestamp=np.zeros(len(pairs), dtype=np.int64),
        weight=np.ones(len(pairs), dtype=np.float32),
    )


SCORES = np.array(
    [
        [9, 8, 1, 7, 2],  # user 0: item 0 excluded -> ranking 1, 3, 4, 2
        [1, 5, 4, 3, 2],  # user 1: ranking 1, 2, 3, 4, 0
        [0, 9, 3, 2, 5],  # user 2: item 1 excluded -> ranking 4, 2, 3, 0
        [5, 5, 5, 5, 5],  # user 3: no targets, never evaluated
    ],
    dtype=np.float32,
)
TARGETS = _log([(0, 1), (0, 3), (1, 0), (2, 2), (2, 4), (2, 0)])
EXCLUDE = _log([(0, 0), (2, 1), (3, 2)])


@pytest.mark.parametrize("batch_size", [1, 2, 1024])
def test_hand_computed_example(batch_size: int) -> None:
    asked: list[int] = []

    def score(rows: IntArray) -> FloatArray:
        asked.extend(rows.tolist())
        return SCORES[rows]

    got = evaluate_ranking(
        score, exclude=EXCLUDE, targets=TARGETS, num_items=5, ks=(1, 3), batch_size=batch_size
    )
    log3 = 1 / math.log2(3)
    ndcg3_user2 = (1 + log3) / (1 + log3 + 0.5)
    assert sorted(asked) == [0, 1, 2]
    assert got["users"] == 3
    assert got["recall@1"] == pytest.approx(2 / 3)
    assert got["ndcg@1"] == pytest.approx(2 / 3)
    assert got["recall@3"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert got["ndcg@3"] == pytest.approx((1 + 0 + ndcg3_user2) / 3)
    assert SCORES[0, 0] == 9  # the caller's matrix is not overwritten with -inf
    assert set(got) == {"recall@1", "recall@3", "ndcg@1", "ndcg@3", "users"}


def test_default_keys_and_perfect_and_worst_rankings() -> None:
    num_items = 40
    targets = _log([(0, i) for i in range(25)] + [(1, 39)])
    perfect = np.tile(-np.arange(num_items, dtype=np.float32), (2, 1))
    perfect[1] = 0
    perfect[1, 39] = 1

    got = evaluate_ranking(
        lambda rows: perfect[rows], exclude=_log([]), targets=targets, num_items=num_items
    )
    assert set(got) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "users"}
    assert all(got[key] == pytest.approx(1.0) for key in got if key != "users")
    worst = evaluate_ranking(
        lambda rows: -perfect[rows], exclude=_log([]), targets=targets, num_items=num_items
    )
    assert worst["recall@20"] == pytest.approx(5 / 20 / 2)  # items 20..24 of user 0 only


def test_random_scores_give_chance_level(tiny_split: Split) -> None:
    rng = np.random.default_rng(0)
    n = tiny_split.num_items

    def random_scores(rows: IntArray) -> FloatArray:
        return rng.random((rows.size, n), dtype=np.float32)

    got = evaluate_ranking(
        random_scores, exclude=tiny_split.train_full, targets=tiny_split.test, num_items=n
    )
    # Chance: about 20 of the ~175 unseen items are retrieved, so recall@20 ≈ 20 / 175.
    assert 0.05 < got["recall@20"] < 0.2
    assert got["users"] == np.unique(tiny_split.test.user).size


def test_no_targets_and_bad_shape() -> None:
    empty = evaluate_ranking(lambda r: SCORES[r], exclude=EXCLUDE, targets=_log([]), num_items=5)
    assert empty["users"] == 0 and empty["recall@20"] == 0.0
    with pytest.raises(ValueError, match="score_fn returned"):
        evaluate_ranking(lambda r: SCORES[r, :3], exclude=EXCLUDE, targets=TARGETS, num_items=5)
