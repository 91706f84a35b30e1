"""Baselines: exact behaviour on hand-sized data, better than chance on synthetic data."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from models.baselines import IALS, ItemKNN, Popularity, build, run_baselines
from models.metrics import evaluate_ranking
from models.types import FloatArray, IntArray, Interactions, Split


def _log(pairs: list[tuple[int, int]]) -> Interactions:
    return Interactions(
        user=np.array([u for u, _ in pairs], dtype=np.int64),
        item=np.array([i for _, i in pairs], dtype=np.int64),
        timestamp=np.zeros(len(pairs), dtype=np.int64),
        weight=np.ones(len(pairs), dtype=np.float32),
    )


# users: 0 -> {0, 1}, 1 -> {0, 1, 2}, 2 -> {2}; item 0 seen twice by user 0 (counts once in kNN)
SMALL = _log([(0, 0), (0, 1), (0, 0), (1, 0), (1, 1), (1, 2), (2, 2)])


def _test_recall(model_scores: Callable[[IntArray], FloatArray], split: Split) -> float:
    metrics = evaluate_ranking(
        model_scores, exclude=split.train_full, targets=split.test, num_items=split.num_items
    )
    return metrics["recall@20"]


def test_popularity_counts_interactions() -> None:
    model = Popularity().fit(SMALL, 3, 4)
    scores = model.score(np.array([0, 2]))
    assert scores.shape == (2, 4) and scores.dtype == np.float32
    assert scores[1].tolist() == [3.0, 2.0, 2.0, 0.0]


def test_itemknn_cosine_with_shrink() -> None:
    model = ItemKNN(neighbours=10, shrink=1.0).fit(SMALL, 3, 3)
    # |U_0 ∩ U_1| = 2, |U_0| = |U_1| = 2  -> 2 / (2 + 1);  |U_1 ∩ U_2| = 1, |U_2| = 2.
    expected = np.array(
        [
            [0.0, 2 / 3, 1 / (2 + 1)],
            [2 / 3, 0.0, 1 / (2 + 1)],
            [1 / (2 + 1), 1 / (2 + 1), 0.0],
        ]
    )
    assert np.allclose(model.similarity.toarray(), expected, atol=1e-6)
    scores = model.score(np.array([2]))
    assert np.allclose(scores, [[1 / 3, 1 / 3, 0.0]], atol=1e-6)
    pruned = ItemKNN(neighbours=1, shrink=0.0).fit(SMALL, 3, 3).similarity.toarray()
    assert (pruned > 0).sum(axis=0).tolist() == [1, 1, 1]  # one neighbour per item
    assert pruned[1, 0] == pytest.approx(1.0) and pruned[0, 1] == pytest.approx(1.0)
    assert pruned[:, 2].max() == pytest.approx(1 / math.sqrt(2 * 2))  # items 0 and 1 tie


def test_ials_is_seeded(tiny_split: Split) -> None:
    a = IALS(factors=8, iterations=3, seed=5).fit(tiny_split.train, 300, 200)
    b = IALS(factors=8, iterations=3, seed=5).fit(tiny_split.train, 300, 200)
    assert a.item_factors.shape == (200, 8)
    assert np.array_equal(a.score(np.arange(10)), b.score(np.arange(10)))


def test_each_baseline_beats_random(tiny_split: Split) -> None:
    rng = np.random.default_rng(1)

    def random_scores(rows: IntArray) -> FloatArray:
        return rng.random((rows.size, tiny_split.num_items), dtype=np.float32)

    chance = _test_recall(random_scores, tiny_split)
    for name, params in [
        ("popularity", {}),
        ("itemknn", {"neighbours": 50, "shrink": 10.0}),
        ("ials", {"factors": 16, "regularization": 0.1, "alpha": 2.0, "iterations": 10}),
    ]:
        model = build(name, params).fit(tiny_split.train_full, 300, 200)
        assert _test_recall(model.score, tiny_split) > 1.5 * chance, name


def test_run_baselines_tunes_and_reports(tiny_split: Split) -> None:
    details: dict[str, dict[str, float]] = {}
    results = run_baselines(tiny_split, seed=0, progress=False, details=details)
    assert set(results) == {"popularity", "itemknn", "ials"}
    for name in ("popularity", "itemknn", "ials"):
        metrics = results[name]
        assert set(metrics) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "users"}
        assert all(isinstance(v, float) for v in metrics.values())
    assert details["itemknn"]["neighbours"] in {50.0, 200.0, 1000.0}
    assert 0 < details["ials"]["valid_recall@20"] <= 1
    assert details["ials"]["factors"] in {32.0, 64.0}
    assert details["popularity"]["seconds"] >= 0
    # Personalised models should beat the unpersonalised one on clustered data.
    assert results["itemknn"]["recall@20"] > results["popularity"]["recall@20"]
    assert results["ials"]["recall@20"] > results["popularity"]["recall@20"]


def test_unknown_baseline() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        build("svd", {})
