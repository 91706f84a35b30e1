"""Strong generalization: held-out users never trained on, contexts cut in time, fold-in scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.baselines import EASE, ItemKNN, binary_matrix
from models.features import history_matrix
from models.pipeline import strong_generalization
from models.strong import (
    evaluate_held_out,
    fold_in_scorer,
    hold_out,
    popularity_scores,
    positives_only,
    two_tower_scorer,
)
from models.train import TrainConfig
from models.types import Dataset


def _rated(dataset: Dataset, seed: int = 0) -> Dataset:
    """The same log with ratings on MovieLens' half-star scale as weights."""
    rng = np.random.default_rng(seed)
    ratings = rng.choice(np.arange(1, 11) / 2, size=len(dataset.interactions)).astype(np.float32)
    return replace(dataset, interactions=replace(dataset.interactions, weight=ratings))


def test_held_out_users_are_absent_from_training_and_cut_in_time(tiny_dataset: Dataset) -> None:
    held = hold_out(tiny_dataset, fraction=0.2, seed=3)
    assert held.num_users == 60
    assert held.train.num_users == 240
    assert not set(held.user_ids) & set(held.train.user_ids)
    assert held.train.items.ids == tiny_dataset.items.ids  # item rows unchanged
    for row, user_id in enumerate(held.user_ids):
        original = tiny_dataset.user_ids.index(user_id)
        mine = tiny_dataset.interactions.user == original
        n = int(mine.sum())
        context = held.context.user == row
        assert int(context.sum()) == int(np.floor(0.8 * n + 0.5))
        assert held.context.item[context].tolist() == (
            tiny_dataset.interactions.item[mine][: int(context.sum())].tolist()
        )
        times = held.context.timestamp[context]
        later = held.targets.timestamp[held.targets.user == row]
        assert later.size == 0 or later.min() >= times.max()
        # no target repeats a context item
        assert not set(held.targets.item[held.targets.user == row]) & set(
            held.context.item[context]
        )
    assert hold_out(tiny_dataset, fraction=0.2, seed=3).user_ids == held.user_ids
    assert hold_out(tiny_dataset, fraction=0.2, seed=4).user_ids != held.user_ids


def test_low_ratings_stay_excluded_but_never_feed_training_nor_targets(
    tiny_dataset: Dataset,
) -> None:
    rated = _rated(tiny_dataset)
    held = hold_out(rated, seed=0, positive_threshold=3.5)
    assert held.train.interactions.weight.min() >= 3.5
    assert held.targets.weight.min() >= 3.5
    assert held.context.weight.min() < 3.5  # the seen set keeps what was disliked
    assert held.tower_input().weight.min() >= 3.5
    assert len(positives_only(rated, None).interactions) == len(rated.interactions)
    assert positives_only(rated, 3.5).interactions.weight.min() >= 3.5


def test_bad_fractions_are_refused(tiny_dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="fraction"):
        hold_out(tiny_dataset, fraction=0.0)
    with pytest.raises(ValueError, match="fraction"):
        hold_out(tiny_dataset, context_fraction=1.0)


def test_ease_recovers_a_planted_item_pair_and_folds_in_a_new_user(tiny_dataset: Dataset) -> None:
    held = hold_out(tiny_dataset, seed=0)
    ease = EASE(regularization=10.0).fit(
        held.train.interactions, held.train.num_users, held.train.num_items
    )
    x = binary_matrix(held.train.interactions, held.train.num_users, held.train.num_items)
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += 10.0
    inverse = np.linalg.inv(gram)
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(ease.weights, expected, atol=1e-5)
    assert np.allclose(np.diag(ease.weights), 0.0)
    context = binary_matrix(held.context, held.num_users, held.num_items)
    scores = ease.fold_in(context[:3])
    assert np.allclose(scores, context[:3].toarray() @ expected, atol=1e-4)


def test_ease_ranks_items_outside_its_top_below_every_inside(tiny_dataset: Dataset) -> None:
    inter = tiny_dataset.interactions
    ease = EASE(regularization=10.0, max_items=50).fit(
        inter, tiny_dataset.num_users, tiny_dataset.num_items
    )
    assert ease.columns.size == 50
    scores = ease.score(np.arange(5))
    outside = np.setdiff1d(np.arange(tiny_dataset.num_items), ease.columns)
    assert scores[:, outside].max() < scores[:, ease.columns].min()


def test_fold_in_item_knn_equals_its_own_scores_for_a_fitted_user(tiny_dataset: Dataset) -> None:
    inter = tiny_dataset.interactions
    knn = ItemKNN(neighbours=50).fit(inter, tiny_dataset.num_users, tiny_dataset.num_items)
    matrix = binary_matrix(inter, tiny_dataset.num_users, tiny_dataset.num_items)
    rows = np.array([0, 5, 9])
    assert np.allclose(knn.score(rows), knn.fold_in(matrix[rows]))


def test_baselines_fold_in_beat_chance(tiny_dataset: Dataset) -> None:
    held = hold_out(tiny_dataset, seed=0)
    knn = ItemKNN(neighbours=50).fit(
        held.train.interactions, held.train.num_users, held.train.num_items
    )
    found = evaluate_held_out(held, fold_in_scorer(knn, held))
    assert found["users"] == held.num_users
    assert found["recall@20"] > 3 * 20 / tiny_dataset.num_items


def test_the_two_tower_row_is_the_tower_on_the_recent_positive_context(
    tiny_dataset: Dataset,
) -> None:
    """User 0 of the tower (unknown), the last min(served, L) positives: as the service does."""
    rated = _rated(tiny_dataset)
    config = TrainConfig.tiny(max_epochs=1)
    found = strong_generalization(
        rated, config=config, positive_threshold=3.5, with_baselines=False, progress=False
    )
    held, model = found.held, found.train.model
    from models.export import item_embeddings

    items = item_embeddings(model, found.train.item_features)
    popularity = popularity_scores(found.split.train_full, held.num_items)
    scorer = two_tower_scorer(model, items, held, popularity=popularity, served_history=4)
    user = 0
    positives = held.tower_input().item[held.tower_input().user == user]
    history = history_matrix([positives[-4:]], history_length=10, padding_idx=held.num_items)
    with torch.no_grad():
        vector = model.user(torch.zeros(1, dtype=torch.int64), torch.from_numpy(history))
    assert np.allclose(scorer(np.array([user]))[0], vector.numpy()[0] @ items.T, atol=1e-5)
    assert found.metrics["two_tower"] == pytest.approx(
        {k: v for k, v in evaluate_held_out(held, two_tower_scorer(
            model, items, held, popularity=popularity
        )).items() if k in found.metrics["two_tower"]}
    )  # fmt: skip
