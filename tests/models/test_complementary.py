"""SGNS dual embeddings learn a planted "b follows a" relation; the next-item metric by hand."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from models.complementary import (
    SGNSConfig,
    cooccurrence_scorer,
    dot_scorer,
    follow_pairs,
    negative_distribution,
    next_item_recall,
    next_pairs,
    pairs_by_distance,
    popularity_scorer,
    serving_tables,
    train_dual,
)
from models.types import Interactions


def _interactions(users: list[list[int]]) -> Interactions:
    user = np.concatenate([np.full(len(s), u) for u, s in enumerate(users)]).astype(np.int64)
    item = np.concatenate([np.array(s) for s in users]).astype(np.int64)
    return Interactions(
        user=user,
        item=item,
        timestamp=np.arange(len(item), dtype=np.int64),
        weight=np.ones(len(item), dtype=np.float32),
    )


def test_follow_pairs_stay_within_a_user() -> None:
    heads, tails = follow_pairs(_interactions([[1, 2, 3], [4, 5]]), window=2)
    assert sorted(zip(heads.tolist(), tails.tolist(), strict=True)) == [
        (1, 2),
        (1, 3),
        (2, 3),
        (4, 5),
    ]


@pytest.mark.parametrize(
    "knobs",
    [
        {"optimizer": "sparse_adam", "lr": 0.01},
        {"optimizer": "sparse_adam", "lr": 0.01, "lr_decay": True},
        {"optimizer": "sgd", "lr": 0.1, "lr_decay": True},
    ],
    ids=["sparse_adam", "lr_decay", "sgd"],
)
def test_sgns_learns_a_planted_asymmetric_relation(knobs: dict[str, Any]) -> None:
    # Item 2j is always followed by 2j+1 (a "refill" after its "printer"); pairs shuffled per user.
    rng = np.random.default_rng(0)
    num_items = 40
    users = []
    for _ in range(300):
        starts = rng.choice(num_items // 2, size=5, replace=False) * 2
        users.append([int(x) for s in starts for x in (s, s + 1)])
    data = _interactions(users)
    item_in, item_out = train_dual(
        data,
        num_items,
        replace(SGNSConfig(dim=16, window=1, negatives=5, epochs=20, batch_size=256), **knobs),
    )
    assert item_in.shape == item_out.shape == (num_items, 16)
    assert item_in.dtype == np.float32
    heads = np.arange(0, num_items, 2)
    result = next_item_recall(dot_scorer(item_in, item_out), heads, heads + 1, k=1)
    assert result.recall == 1.0
    # The reverse (refill -> printer) is not what follows, so it ranks first far less often.
    assert result.asymmetry < 0.5


def test_next_item_recall_on_a_hand_made_case() -> None:
    # Scores: item 0 -> 1 best; item 1 -> 2 best; item 2 -> 0 best.
    table = np.array([[0, 5, 1], [1, 0, 5], [5, 1, 0]], dtype=np.float32)
    scorer = lambda rows: table[rows]  # noqa: E731
    heads, tails = next_pairs(_interactions([[0, 1, 2], [1, 0]]))
    # Pairs (0,1), (1,2), (1,0): hits at k=1 are (0,1) and (1,2); reverse of neither ranks first.
    result = next_item_recall(scorer, heads, tails, k=1)
    assert result.recall == 2 / 3
    assert result.asymmetry == 0.0
    # At k=2 every pair hits (the query itself is excluded) and every reverse too.
    assert next_item_recall(scorer, heads, tails, k=2).asymmetry == 1.0


def test_ties_count_as_the_chance_of_winning_them() -> None:
    # Query 0 scores items 1..4 all 0 (say, no co-occurrence at all): target 3 ties with 3
    # others, so at k=2 it is a hit with probability 2/4, never a sure one.
    table = np.zeros((5, 5), dtype=np.float32)
    table[3, 0] = 1.0  # the reverse: 0 is 3's best
    scorer = lambda rows: table[rows]  # noqa: E731
    result = next_item_recall(scorer, np.array([0]), np.array([3]), k=2)
    assert result.recall == 0.5
    assert result.asymmetry == 1.0
    assert next_item_recall(scorer, np.array([0]), np.array([3]), k=4).recall == 1.0


def test_served_tables_mark_what_training_never_saw() -> None:
    data = _interactions([[0, 1, 2], [3]])
    rng = np.random.default_rng(0)
    item_in = rng.normal(size=(5, 4)).astype(np.float32)
    item_out = rng.normal(size=(5, 4)).astype(np.float32)
    item_out[4] = 0.0  # item 4: no interaction, so never trained as a follower or a negative
    served_in, served_out = serving_tables(item_in, item_out, data, window=1)
    assert served_in.shape == served_out.shape == (5, 5)
    assert np.array_equal(served_in[[0, 1], :4], item_in[[0, 1]])  # 0 -> 1 and 1 -> 2 learnt
    assert served_in[[0, 1], 4].tolist() == [1.0, 1.0]
    assert not np.any(served_in[[2, 3, 4]])  # 2 ends a sequence, 3 is alone, 4 never seen
    scores = served_in[0] @ served_out.T
    assert np.allclose(scores[:4], item_in[0] @ item_out[:4].T, atol=1e-5)
    assert scores[4] < scores[:4].min() - 1000  # the untrained item ranks last


def test_cooccurrence_and_popularity_baselines() -> None:
    data = _interactions([[0, 1], [0, 1], [2, 1], [2, 2]])
    cooc = cooccurrence_scorer(data, 3)
    assert cooc(np.array([0]))[0].tolist() == [0, 2, 0]
    assert popularity_scorer(data, 3)(np.array([0, 1]))[1].tolist() == [2, 3, 3]


def test_negative_distribution_follows_the_exponent() -> None:
    # Item 0 seen 4 times, item 1 once, item 2 never.
    item = np.array([0, 0, 0, 0, 1], dtype=np.int64)
    assert np.allclose(negative_distribution(item, 3, 1.0), [0.8, 0.2, 0.0])
    assert np.allclose(negative_distribution(item, 3, 0.0), [0.5, 0.5, 0.0])  # uniform over seen
    assert np.allclose(negative_distribution(item, 3, 0.5), [2 / 3, 1 / 3, 0.0])
    # A negative exponent favours the rare item, and still never draws the unseen one.
    assert np.allclose(negative_distribution(item, 3, -1.0), [0.2, 0.8, 0.0])


def test_training_draws_negatives_from_the_configured_law() -> None:
    # One pair 0 -> 1 and a popular item 2 that never follows 0: with count^1 negatives, 2 is
    # pushed below 3 for query 0 (drawn far more often); with count^-1 it is 3 that is pushed.
    users = [[0, 1], *([[2]] * 30), [3]]
    data = _interactions(users)
    config = SGNSConfig(dim=8, window=1, negatives=3, epochs=300, batch_size=1, lr=0.02)
    config = replace(config, optimizer="sparse_adam", lr_decay=False)
    scores = {}
    for exponent in (1.0, -1.0):
        item_in, item_out = train_dual(data, 4, replace(config, ns_exponent=exponent))
        scores[exponent] = item_in[0] @ item_out.T
    assert scores[1.0][2] < scores[1.0][3]
    assert scores[-1.0][3] < scores[-1.0][2]


def test_distance_power_weighs_near_followers_more() -> None:
    # Every sequence is 0 1 2: 1 follows 0 at distance 1, 2 at distance 2. Alike weights learn
    # the two equally; 1/d^4 makes 0 -> 1 the far stronger relation.
    data = _interactions([[0, 1, 2]] * 40 + [[3, 4]] * 40)
    config = SGNSConfig(dim=8, window=2, negatives=2, epochs=30, batch_size=16, ns_exponent=0.0)
    config = replace(config, optimizer="sparse_adam", lr=0.01, lr_decay=False, distance_power=0.0)
    item_in, item_out = train_dual(data, 5, replace(config, distance_power=4.0))
    weighted = item_in[0] @ item_out.T
    assert weighted[1] - weighted[2] > 1.0
    item_in, item_out = train_dual(data, 5, config)
    alike = item_in[0] @ item_out.T
    assert abs(alike[1] - alike[2]) < weighted[1] - weighted[2]


def test_pairs_know_their_distance() -> None:
    heads, tails, steps = pairs_by_distance(_interactions([[1, 2, 3]]), window=2)
    assert sorted(zip(heads.tolist(), tails.tolist(), steps.tolist(), strict=True)) == [
        (1, 2, 1),
        (1, 3, 2),
        (2, 3, 1),
    ]


def test_l2_shrinks_the_rows_it_touches_and_unknown_optimizers_are_refused() -> None:
    data = _interactions([[0, 1, 2, 3]] * 30)
    config = SGNSConfig(dim=8, window=1, epochs=30, batch_size=8, optimizer="sparse_adam", lr=0.01)
    free = np.linalg.norm(train_dual(data, 4, config)[0], axis=1)
    shrunk = np.linalg.norm(train_dual(data, 4, replace(config, l2=1.0))[0], axis=1)
    assert np.all(shrunk[:3] < 0.1 * free[:3])
    with pytest.raises(ValueError, match="optimizer"):
        train_dual(data, 4, replace(config, optimizer="adagrad"))


def test_sgd_stays_finite_when_an_item_recurs_hundreds_of_times_a_batch() -> None:
    # 2,000 users over 50 items: each row is used ~400 times per batch of 4096 pairs; summed
    # SGD at the default lr overflows to NaN without the cap on summed uses.
    rng = np.random.default_rng(0)
    data = _interactions([rng.integers(0, 50, size=25).tolist() for _ in range(2000)])
    item_in, item_out = train_dual(data, 50, SGNSConfig(epochs=2))
    assert np.all(np.isfinite(item_in)) and np.all(np.isfinite(item_out))
    assert np.abs(item_in).max() < 100
