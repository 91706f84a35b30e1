"""Strong generalization: users no model has seen, as every new sign-up is.

A seeded `fraction` of the users (15%) is held out entirely, and every model is fitted on the
others. Each held-out user's chronological history is cut in two: the first
`context_fraction` (80%) is the context, what they posted as events; the rest are the targets.
Every context item is excluded from the ranking (the service's seen set), so a target repeated
from the context is dropped.

With `positive_threshold` (the service's `DUET_RATING_THRESHOLD`), a rating below it is not a
positive: it leaves the training data and the tower's input, stays in the excluded context (it
was seen) and is never a target. Without it every interaction is a positive.

The two-tower row is what the service computes for a user it does not know: user index 0 (no
demographics: row 0, "unknown"), history = the last `min(served_history, history_length)`
positive context items, oldest first; a user with no positive context gets the popularity list
(the service's cold start). The baselines fold the context in: popularity, ItemKNN (the context
times the item-item similarity) and EASE (the context times B). Their hyper-parameters are
chosen on an inner hold-out of the training users, never on the held-out ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.baselines import EASE_GRID, KNN_GRID, binary_matrix, build
from models.datasets import fingerprint
from models.features import history_matrix, user_sequences
from models.metrics import evaluate_ranking
from models.towers import TwoTower
from models.types import Dataset, FloatArray, IntArray, Interactions, UserFeatures

SERVED_HISTORY = 200  # the service's DUET_HISTORY_LENGTH default
TUNING_METRIC = "recall@20"
Scorer = Callable[[IntArray], FloatArray]


@dataclass(frozen=True)
class HeldOut:
    """The training dataset (held-out users removed, same item rows) and the held-out users.

    `context` and `targets` index users by row of `user_ids` (0..H-1), chronologically.
    """

    train: Dataset
    user_ids: list[str]
    context: Interactions
    targets: Interactions
    positive_threshold: float | None

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return self.train.num_items

    def tower_input(self) -> Interactions:
        """The context's positives: what the service's history (and the tower) receives."""
        return _positives(self.context, self.positive_threshold)


def positives_only(dataset: Dataset, threshold: float | None) -> Dataset:
    """The dataset without interactions weighted below `threshold` (ratings); None = as is."""
    if threshold is None:
        return dataset
    kept = _positives(dataset.interactions, threshold)
    return replace(
        dataset,
        interactions=kept,
        fingerprint=fingerprint(dataset.user_ids, dataset.items.ids, kept),
    )


def hold_out(
    dataset: Dataset,
    *,
    fraction: float = 0.15,
    context_fraction: float = 0.8,
    seed: int = 0,
    positive_threshold: float | None = None,
) -> HeldOut:
    """Hold out a seeded `fraction` of the users with at least two interactions (module doc)."""
    if not 0.0 < fraction < 1.0 or not 0.0 < context_fraction < 1.0:
        raise ValueError("fraction and context_fraction must lie in (0, 1)")
    inter = dataset.interactions
    counts = np.bincount(inter.user, minlength=dataset.num_users)
    eligible = np.flatnonzero(counts >= 2)
    size = min(len(eligible), int(np.floor(fraction * dataset.num_users + 0.5)))
    if size in (0, dataset.num_users):
        raise ValueError(f"cannot hold out {fraction:.0%} of {dataset.num_users} users")
    chosen = np.sort(np.random.default_rng(seed).choice(eligible, size=size, replace=False))
    held = np.zeros(dataset.num_users, dtype=bool)
    held[chosen] = True
    train = positives_only(_users(dataset, ~held), positive_threshold)

    rows = held[inter.user]
    renumber = np.cumsum(held) - 1
    log = _take(inter, rows, user=renumber[inter.user[rows]])
    n = np.bincount(log.user, minlength=size)
    first = np.concatenate(([0], np.cumsum(n)[:-1]))
    position = np.arange(len(log)) - first[log.user]
    n_context = np.clip(np.floor(context_fraction * n + 0.5).astype(np.int64), 1, n - 1)
    in_context = position < n_context[log.user]
    keys = log.user * np.int64(dataset.num_items) + log.item
    target = ~in_context & ~np.isin(keys, keys[in_context])
    _, first_copy = np.unique(keys, return_index=True)
    once = np.zeros(len(log), dtype=bool)
    once[first_copy] = True
    target &= once
    if positive_threshold is not None:
        target &= log.weight >= positive_threshold
    return HeldOut(
        train=train,
        user_ids=[dataset.user_ids[u] for u in chosen],
        context=_take(log, in_context),
        targets=_take(log, target),
        positive_threshold=positive_threshold,
    )


def evaluate_held_out(held: HeldOut, score: Scorer) -> dict[str, float]:
    """Recall/NDCG@10/20 over the held-out users with targets, every context item excluded."""
    return evaluate_ranking(
        score, exclude=held.context, targets=held.targets, num_items=held.num_items
    )


def two_tower_scorer(
    model: TwoTower,
    item_vectors: FloatArray,
    held: HeldOut,
    *,
    popularity: FloatArray,
    served_history: int = SERVED_HISTORY,
) -> Scorer:
    """Scores as the service computes them for unknown users (module doc)."""
    length = model.config.history_length
    window = min(served_history, length)
    sequences = user_sequences(held.tower_input(), held.num_users)
    matrix = history_matrix(
        [s[-window:] for s in sequences], history_length=length, padding_idx=held.num_items
    )
    features = len(model.user.features)
    model.eval()
    with torch.no_grad():
        users = model.user(
            torch.zeros(len(matrix), dtype=torch.int64),
            torch.from_numpy(matrix),
            torch.zeros((len(matrix), features), dtype=torch.int64) if features else None,
        ).numpy()
    cold = np.array([len(s) == 0 for s in sequences], dtype=bool)

    def score(rows: IntArray) -> FloatArray:
        scores = np.asarray(users[rows] @ item_vectors.T, dtype=np.float32)
        scores[cold[rows]] = popularity
        return scores

    return score


def fold_in_scorer(model: Any, held: HeldOut) -> Scorer:
    """A baseline with `fold_in(context matrix)`, fed the held-out users' positive context."""
    context = binary_matrix(held.tower_input(), held.num_users, held.num_items)

    def score(rows: IntArray) -> FloatArray:
        scores: FloatArray = model.fold_in(context[rows])
        return scores

    return score


def baseline_rows(
    held: HeldOut, *, seed: int = 0
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Popularity, ItemKNN and EASE on the held-out users, each tuned on an inner hold-out."""
    grids: Mapping[str, tuple[Mapping[str, float], ...]] = {
        "popularity": ({},),
        "itemknn": KNN_GRID,
        "ease": EASE_GRID,
    }
    inner = hold_out(held.train, seed=seed + 1) if held.train.num_users >= 10 else None
    results: dict[str, dict[str, float]] = {}
    chosen: dict[str, dict[str, float]] = {}
    train = held.train
    for name, grid in grids.items():
        best: tuple[float, Mapping[str, float]] = (-1.0, grid[0])
        if len(grid) > 1 and inner is not None:
            for params in grid:
                fitted = _fit(name, params, inner.train, seed)
                found = evaluate_held_out(inner, fold_in_scorer(fitted, inner))
                if found[TUNING_METRIC] > best[0]:
                    best = (found[TUNING_METRIC], params)
        model = _fit(name, best[1], train, seed)
        results[name] = evaluate_held_out(held, fold_in_scorer(model, held))
        chosen[name] = {k: float(v) for k, v in best[1].items()}
        if best[0] >= 0:
            chosen[name]["inner_" + TUNING_METRIC] = best[0]
    return results, chosen


def _fit(name: str, params: Mapping[str, float], train: Dataset, seed: int) -> Any:
    return build(name, params, seed=seed).fit(train.interactions, train.num_users, train.num_items)


def popularity_scores(train_full: Interactions, num_items: int) -> FloatArray:
    """What the bundle's popularity list ranks by: interaction counts in `train_full`."""
    return np.bincount(train_full.item, minlength=num_items).astype(np.float32)


def _positives(interactions: Interactions, threshold: float | None) -> Interactions:
    if threshold is None:
        return interactions
    return _take(interactions, interactions.weight >= threshold)


def _users(dataset: Dataset, keep: npt.NDArray[np.bool_]) -> Dataset:
    """The dataset restricted to the users where `keep` is True, renumbered in order."""
    inter = dataset.interactions
    rows = keep[inter.user]
    renumber = np.cumsum(keep) - 1
    kept = _take(inter, rows, user=renumber[inter.user[rows]])
    user_ids = [u for u, k in zip(dataset.user_ids, keep, strict=True) if k]
    features = dataset.user_features
    if features is not None:
        features = UserFeatures(features.names, features.cardinalities, features.values[keep])
    return replace(
        dataset,
        user_ids=user_ids,
        interactions=kept,
        user_features=features,
        fingerprint=fingerprint(user_ids, dataset.items.ids, kept),
    )


def _take(interactions: Interactions, mask: Any, *, user: IntArray | None = None) -> Interactions:
    return Interactions(
        user=(interactions.user[mask] if user is None else user).astype(np.int64),
        item=interactions.item[mask],
        timestamp=interactions.timestamp[mask],
        weight=interactions.weight[mask],
    )
