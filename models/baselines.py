"""The baselines a team would otherwise ship: popularity, item-item cosine kNN, iALS, EASE.

Each is tuned the same way as the two-tower model: fit on `train`, pick the configuration with
the best validation Recall@20, refit it on `train_full`, evaluate once on `test`. The grids are
small on purpose (the whole run stays within a couple of minutes on 2 cores), but cover the
settings that matter on MovieLens-sized data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
from tqdm import tqdm

from models.metrics import evaluate_ranking
from models.types import FloatArray, IntArray, Interactions, Split

TUNING_METRIC = "recall@20"
KNN_GRID: tuple[dict[str, float], ...] = tuple(
    {"neighbours": k, "shrink": s} for k, s in ((50, 10.0), (200, 10.0), (200, 50.0), (1000, 10.0))
)
# Explored on the three MovieLens sets: strong regularisation with a small alpha wins there;
# 128 factors and reg ≤ 0.5 never beat 32-64 factors with reg 5-20.
IALS_GRID: tuple[dict[str, float], ...] = tuple(
    {"factors": f, "regularization": r, "alpha": a, "iterations": 15}
    for f in (32, 64)
    for r in (5.0, 20.0)
    for a in (1.0, 2.0)
)
EASE_GRID: tuple[dict[str, float], ...] = tuple({"regularization": r} for r in (50.0, 200.0, 800.0))
_THREADS = 2


def binary_matrix(interactions: Interactions, num_users: int, num_items: int) -> sp.csr_matrix:
    """users × items, 1.0 where the user interacted with the item (repeats collapse)."""
    matrix = sp.csr_matrix(
        (np.ones(len(interactions), dtype=np.float32), (interactions.user, interactions.item)),
        shape=(num_users, num_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


class Popularity:
    """Most-interacted items first, the same list for every user."""

    def __init__(self) -> None:
        self.counts: FloatArray = np.zeros(0, dtype=np.float32)

    def fit(self, train: Interactions, num_users: int, num_items: int) -> Self:
        del num_users
        self.counts = np.bincount(train.item, minlength=num_items).astype(np.float32)
        return self

    def score(self, user_rows: IntArray) -> FloatArray:
        return np.broadcast_to(self.counts, (len(user_rows), self.counts.size)).copy()

    def fold_in(self, context: sp.csr_matrix) -> FloatArray:
        """Scores for users it was not fitted on (rows of `context`): the same list."""
        return self.score(np.arange(context.shape[0]))


class ItemKNN:
    """Cosine item-item similarity on the binary matrix, top `neighbours` per item.

    sim(i, j) = |U_i ∩ U_j| / (sqrt|U_i| sqrt|U_j| + shrink): the shrink term damps
    similarities resting on few co-occurrences. score(u, j) = Σ_i x_ui sim(i, j).
    """

    def __init__(self, neighbours: int = 200, shrink: float = 10.0, block: int = 1024) -> None:
        self.neighbours = neighbours
        self.shrink = shrink
        self.block = block
        self.matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def fit(self, train: Interactions, num_users: int, num_items: int) -> Self:
        self.matrix = binary_matrix(train, num_users, num_items)
        by_item = self.matrix.T.tocsr()
        dense = self.matrix.toarray()
        norms = np.sqrt(np.asarray(self.matrix.sum(axis=0)).ravel()).astype(np.float32)
        k = min(self.neighbours, max(num_items - 1, 1))
        rows, cols, vals = [], [], []
        for start in range(0, num_items, self.block):
            stop = min(start + self.block, num_items)
            # Row t of the block: similarities of target item start + t to every item.
            sim = np.asarray(by_item[start:stop] @ dense, dtype=np.float32)
            sim /= norms[start:stop, None] * norms[None, :] + self.shrink + 1e-12
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            if k < num_items:
                top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(num_items), sim.shape)
            values = np.take_along_axis(sim, top, axis=1)
            keep = values > 0
            rows.append(top[keep])
            cols.append(np.broadcast_to(np.arange(start, stop)[:, None], top.shape)[keep])
            vals.append(values[keep])
        self.similarity = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(num_items, num_items),
            dtype=np.float32,
        )
        return self

    def score(self, user_rows: IntArray) -> FloatArray:
        return self.fold_in(self.matrix[user_rows])

    def fold_in(self, context: sp.csr_matrix) -> FloatArray:
        """score(u, j) = Σ_i x_ui sim(i, j) for users given by their rows of `context`."""
        return np.asarray((context @ self.similarity).toarray(), dtype=np.float32)


class IALS:
    """Implicit ALS (Hu, Koren, Volinsky 2008) from the `implicit` library, seeded."""

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.1,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.user_factors: FloatArray = np.zeros((0, 0), dtype=np.float32)
        self.item_factors: FloatArray = np.zeros((0, 0), dtype=np.float32)

    def fit(self, train: Interactions, num_users: int, num_items: int) -> Self:
        # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=_THREADS,
            )
            model.fit(binary_matrix(train, num_users, num_items), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, user_rows: IntArray) -> FloatArray:
        return np.asarray(self.user_factors[user_rows] @ self.item_factors.T, dtype=np.float32)


class EASE:
    """EASE (Steck 2019): B = I - P / diag(P) with P = (X^T X + λI)^-1, so score = x_u B.

    A closed form with no user factors, so a user it was never fitted on is scored from their
    context alone. The inverse is dense and cubic in the catalog: only the `max_items` most
    popular items take part (every item up to ~5,000), the others score below all of them.
    """

    def __init__(self, regularization: float = 500.0, max_items: int = 5_000) -> None:
        self.regularization = regularization
        self.max_items = max_items
        self.columns: IntArray = np.zeros(0, dtype=np.int64)
        self.weights: FloatArray = np.zeros((0, 0), dtype=np.float32)
        self.matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self.num_items = 0

    def fit(self, train: Interactions, num_users: int, num_items: int) -> Self:
        self.matrix = binary_matrix(train, num_users, num_items)
        self.num_items = num_items
        counts = np.asarray(self.matrix.sum(axis=0)).ravel()
        order = np.argsort(-counts, kind="stable")[: self.max_items]
        self.columns = np.sort(order[counts[order] > 0]).astype(np.int64)
        sub = self.matrix[:, self.columns]
        gram = np.asarray((sub.T @ sub).toarray(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += self.regularization
        with threadpool_limits(_THREADS, "blas"):
            inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)
        return self

    def score(self, user_rows: IntArray) -> FloatArray:
        return self.fold_in(self.matrix[user_rows])

    def fold_in(self, context: sp.csr_matrix) -> FloatArray:
        """x_u B for users given by their rows of `context` (users × items, binary)."""
        sub = context[:, self.columns]
        inside = np.asarray(sub @ self.weights, dtype=np.float32)
        floor = float(inside.min()) - 1.0 if inside.size else -1.0
        scores = np.full((context.shape[0], self.num_items), floor, dtype=np.float32)
        scores[:, self.columns] = inside
        return scores


class Recommender(Protocol):
    def fit(self, train: Interactions, num_users: int, num_items: int) -> Self: ...

    def score(self, user_rows: IntArray) -> FloatArray: ...


def build(name: str, params: Mapping[str, float], *, seed: int = 0) -> Recommender:
    """A baseline by name, from a flat hyper-parameter mapping (as in the grids)."""
    if name == "popularity":
        return Popularity()
    if name == "itemknn":
        return ItemKNN(neighbours=int(params["neighbours"]), shrink=float(params["shrink"]))
    if name == "ials":
        return IALS(
            factors=int(params["factors"]),
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
            iterations=int(params["iterations"]),
            seed=seed,
        )
    if name == "ease":
        return EASE(regularization=float(params["regularization"]))
    raise ValueError(f"unknown baseline {name!r}")


@dataclass(frozen=True)
class Tuned:
    """Test metrics of the configuration that won on validation."""

    metrics: dict[str, float]
    params: dict[str, float]
    seconds: float


def run_baselines(
    split: Split,
    *,
    seed: int = 0,
    progress: bool = True,
    details: dict[str, dict[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Tune on train -> valid, refit the best on train_full, evaluate on test.

    Returns test metrics per baseline ("popularity", "itemknn", "ials"). When `details` is
    given, it receives per baseline the chosen hyper-parameters, their validation Recall@20
    and the seconds spent (tuning included).
    """
    results: dict[str, dict[str, float]] = {}
    grids: dict[str, tuple[Mapping[str, float], ...]] = {
        "popularity": ({},),
        "itemknn": KNN_GRID,
        "ials": IALS_GRID,
    }
    for name, grid in grids.items():
        tuned = _tune(name, grid, split, seed=seed, progress=progress)
        results[name] = tuned.metrics
        if details is not None:
            details[name] = tuned.params | {"seconds": round(tuned.seconds, 2)}
    return results


def _tune(
    name: str,
    grid: tuple[Mapping[str, float], ...],
    split: Split,
    *,
    seed: int,
    progress: bool,
) -> Tuned:
    started = time.perf_counter()
    best: tuple[float, Mapping[str, float]] = (-1.0, grid[0])
    if len(grid) > 1:
        for config in tqdm(grid, desc=f"tune {name}", disable=not progress, leave=False):
            model = build(name, config, seed=seed).fit(
                split.train, split.num_users, split.num_items
            )
            valid = evaluate_ranking(
                model.score, exclude=split.train, targets=split.valid, num_items=split.num_items
            )
            if valid[TUNING_METRIC] > best[0]:
                best = (valid[TUNING_METRIC], config)
    model = build(name, best[1], seed=seed).fit(split.train_full, split.num_users, split.num_items)
    metrics = evaluate_ranking(
        model.score, exclude=split.train_full, targets=split.test, num_items=split.num_items
    )
    chosen = {key: float(value) for key, value in best[1].items()}
    if best[0] >= 0:
        chosen["valid_" + TUNING_METRIC] = best[0]
    return Tuned(metrics=metrics, params=chosen, seconds=time.perf_counter() - started)
