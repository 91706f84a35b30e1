"""Cold-start items, measured: items no model trained on, embedded from their content alone.

The protocol (docs/live-catalog.md, "Cold-start items, measured"):

- Held out: a seeded `fraction` (10%) of the items with an interaction in the ordinary split's
  `train_full`. Their rows stay in the catalog; every interaction on them leaves the train,
  valid, train_full and test slices the *cold* model is fitted on, so it never meets them, as
  a target, a negative's label or a history entry.
- Embedded as the live catalog embeds a newly posted item (service/catalog/item_embedder.py):
  the item tower on the unknown-item id row (`num_items`) plus the item's genres, year and
  title tokens. Every other item keeps its id + content embedding (its bundle row).
- Users: everyone with an interaction on a held-out item. Tower input (their own user id and
  history) and excluded set: their `train_full` without the held-out items. Targets: every
  held-out item they interacted with, in any period. Every item is a candidate. Recall@20 =
  hits / min(|targets|, 20), averaged over these users.
- The test-period column keeps only the held-out targets of each user's test slice and
  excludes the whole `train_full` (the user has seen those, held out or not): there the
  upper reference has never seen the targets either.

Rows:
- `two_tower_content_only`: the cold model, held-out items content-only (above), as served.
- `two_tower_unknown_row`: the same model without its cold head (models/cold_head.py): the
  unknown row plus the content part, which is what the tower served before the cold head.
- `random`: every order of the candidates equally likely, the expectation computed exactly:
  a candidate lands in the top k' = min(k, C) of C candidates with probability k'/C.
- `popularity_known_count`: every item by its `train_full` count, a held-out item by the count
  it would have had (its real one). No deployable system knows it: an oracle, the strongest
  placement popularity can make, and the baseline the target is stated against.
- `popularity_genre_bucket`: deployable: a held-out item gets the mean count of the known items
  with exactly its genres (of all known items when none has them).
- `two_tower_id_trained`: the ordinary model, trained with the held-out items, on the same
  users, inputs and targets, held-out items by their id + content rows: an upper reference,
  in-sample for targets before the test period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.features import ItemFeatures
from models.metrics import evaluate_ranking
from models.towers import TwoTower
from models.train import TrainConfig, Trainer, TrainResult, train
from models.types import Dataset, FloatArray, IntArray, Interactions, Items, Split

COLD_FRACTION = 0.10
K = 20
BoolArray = npt.NDArray[np.bool_]
Row = dict[str, float]
Scorer = Callable[[IntArray], FloatArray]


def choose_items(
    interactions: Interactions, num_items: int, *, fraction: float = COLD_FRACTION, seed: int = 0
) -> BoolArray:
    """Mask over item rows: a seeded `fraction` of the items that occur in `interactions`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must lie in (0, 1)")
    eligible = np.flatnonzero(np.bincount(interactions.item, minlength=num_items) > 0)
    size = int(np.floor(fraction * len(eligible) + 0.5))
    if size in (0, len(eligible)):
        raise ValueError(f"cannot hold out {fraction:.0%} of {len(eligible)} items")
    chosen = np.random.default_rng(seed).choice(eligible, size=size, replace=False)
    held = np.zeros(num_items, dtype=bool)
    held[chosen] = True
    return held


def keep(interactions: Interactions, mask: BoolArray) -> Interactions:
    return Interactions(
        interactions.user[mask],
        interactions.item[mask],
        interactions.timestamp[mask],
        interactions.weight[mask],
    )


def without_items(split: Split, held: BoolArray) -> Split:
    """`split` with every interaction on a held-out item removed, from every slice."""

    def drop(part: Interactions) -> Interactions:
        return keep(part, ~held[part.item])

    return replace(
        split,
        train=drop(split.train),
        valid=drop(split.valid),
        test=drop(split.test),
        train_full=drop(split.train_full),
        extra={**split.extra, "held_out_items": int(held.sum())},
    )


def content_only_vectors(
    model: TwoTower, features: ItemFeatures, rows: IntArray, *, cold_head: bool = True
) -> FloatArray:
    """The item tower on the unknown-item id row and the rows' content: the live catalog's
    embedding of a newly posted item. `cold_head=False`: the tower without its cold head
    (the unknown row plus the content part, the path before models/cold_head.py)."""
    model.eval()
    idx = torch.from_numpy(rows.astype(np.int64))
    fitted = model.item.cold_fitted
    model.item.cold_fitted = fitted and cold_head
    try:
        with torch.no_grad():
            out = model.item(
                torch.full_like(idx, features.num_items),
                torch.from_numpy(features.genres)[idx],
                torch.from_numpy(features.year)[idx],
                torch.from_numpy(features.title_tokens)[idx],
            )
    finally:
        model.item.cold_fitted = fitted
    return np.asarray(out.numpy(), dtype=np.float32)


def catalog_vectors(
    model: TwoTower, features: ItemFeatures, held: BoolArray, *, cold_head: bool = True
) -> FloatArray:
    """Every item row's embedding; the held-out rows content-only."""
    from models.export import item_embeddings  # noqa: PLC0415 - export pulls in onnx and faiss

    vectors = item_embeddings(model, features)
    rows = np.flatnonzero(held)
    if len(rows):
        vectors[rows] = content_only_vectors(model, features, rows, cold_head=cold_head)
    return vectors


@dataclass(frozen=True)
class Protocol:
    """Who is ranked, from what, against what (module doc)."""

    held: BoolArray
    history: Interactions  # train_full without the held-out items: tower input, excluded
    targets: Interactions  # every interaction on a held-out item
    seen: Interactions  # the whole train_full: excluded in the test-period column
    test_targets: Interactions  # the test slice's interactions on a held-out item

    def columns(self) -> dict[str, tuple[Interactions, Interactions]]:
        """Column name -> (excluded, targets)."""
        return {"": (self.history, self.targets), "test_": (self.seen, self.test_targets)}


def protocol(dataset: Dataset, split: Split, held: BoolArray) -> Protocol:
    everything = dataset.interactions
    return Protocol(
        held=held,
        history=keep(split.train_full, ~held[split.train_full.item]),
        targets=keep(everything, held[everything.item]),
        seen=split.train_full,
        test_targets=keep(split.test, held[split.test.item]),
    )


def random_placement(
    exclude: Interactions, targets: Interactions, num_items: int, k: int = K
) -> Row:
    """Exact expected Recall@k and NDCG@k of a uniformly random order of each user's
    candidates (every item not excluded), over the users with targets."""
    users, counts = _distinct_per_user(targets, num_items)
    if users.size == 0:
        return {f"recall@{k}": 0.0, f"ndcg@{k}": 0.0}
    excluded_users, excluded = _distinct_per_user(exclude, num_items)
    lookup = dict(zip(excluded_users.tolist(), excluded.tolist(), strict=True))
    candidates = num_items - np.array([lookup.get(u, 0) for u in users.tolist()], dtype=np.int64)
    top = np.minimum(k, candidates)
    p_target = counts / candidates  # chance that a given rank holds a target
    recall = counts * top / candidates / np.minimum(counts, k)
    discount = np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))))
    ndcg = p_target * discount[top] / discount[np.minimum(counts, top)]
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float(ndcg.mean())}


def _distinct_per_user(interactions: Interactions, num_items: int) -> tuple[IntArray, IntArray]:
    keys = np.unique(interactions.user * np.int64(num_items) + interactions.item)
    users, counts = np.unique(keys // num_items, return_counts=True)
    return users.astype(np.int64), counts.astype(np.int64)


def genre_bucket_counts(items: Items, counts: FloatArray, held: BoolArray) -> FloatArray:
    """Known items' counts; a held-out item gets the mean count of the known items with
    exactly its genres (of every known item when none has them)."""
    keys = [tuple(sorted(g)) for g in items.genres]
    sums: dict[tuple[str, ...], list[float]] = {}
    for row in np.flatnonzero(~held).tolist():
        total = sums.setdefault(keys[row], [0.0, 0.0])
        total[0] += float(counts[row])
        total[1] += 1.0
    fallback = float(counts[~held].mean()) if (~held).any() else 0.0
    out = counts.astype(np.float32, copy=True)
    for row in np.flatnonzero(held).tolist():
        bucket = sums.get(keys[row])
        out[row] = bucket[0] / bucket[1] if bucket else fallback
    return out


def _ranked(scores_for: Scorer, prot: Protocol, num_items: int) -> Row:
    """Recall and NDCG@K of a scorer (user rows -> [rows, num_items]) in both columns."""
    row: Row = {}
    for prefix, (exclude, targets) in prot.columns().items():
        found = evaluate_ranking(scores_for, exclude=exclude, targets=targets, num_items=num_items)
        row[f"{prefix}recall@{K}"] = found[f"recall@{K}"]
        row[f"{prefix}ndcg@{K}"] = found[f"ndcg@{K}"]
    return row


def _user_vectors(
    model: TwoTower, dataset: Dataset, split: Split, config: TrainConfig, history: Interactions
) -> FloatArray:
    """Every user's tower output (own id, demographics) with `history` as their past."""
    trainer = Trainer(dataset, split, config, progress=False)
    return np.asarray(trainer.embed_users(model, history).numpy(), dtype=np.float32)


def _dot_scorer(users: FloatArray, items: FloatArray) -> Scorer:
    return lambda rows: np.asarray(users[rows] @ items.T, dtype=np.float32)


def _constant_scorer(scores: FloatArray) -> Scorer:
    return lambda rows: np.broadcast_to(scores, (len(rows), scores.size))


def evaluate_cold_items(
    dataset: Dataset,
    split: Split,
    *,
    config: TrainConfig,
    warm: TrainResult | None = None,
    fraction: float = COLD_FRACTION,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a model without a seeded `fraction` of the items, then rank them for the users
    who had them (module doc); `warm` (trained on `split` itself) gives the upper reference."""
    started = time.perf_counter()
    num_items = dataset.num_items
    held = choose_items(split.train_full, num_items, fraction=fraction, seed=config.seed)
    prot = protocol(dataset, split, held)
    cold_split = without_items(split, held)
    cold = train(dataset, cold_split, config, progress=progress)
    trained = time.perf_counter()
    users = _user_vectors(cold.model, dataset, cold_split, config, prot.history)
    rows: dict[str, Row] = {}
    for name, with_head in (("two_tower_content_only", True), ("two_tower_unknown_row", False)):
        vectors = catalog_vectors(cold.model, cold.item_features, held, cold_head=with_head)
        rows[name] = _ranked(_dot_scorer(users, vectors), prot, num_items)
    rows["random"] = {}
    for prefix, (exclude, targets) in prot.columns().items():
        expected = random_placement(exclude, targets, num_items)
        rows["random"].update({prefix + name: value for name, value in expected.items()})
    counts = np.bincount(split.train_full.item, minlength=num_items).astype(np.float32)
    rows["popularity_known_count"] = _ranked(_constant_scorer(counts), prot, num_items)
    bucket = genre_bucket_counts(dataset.items, counts, held)
    rows["popularity_genre_bucket"] = _ranked(_constant_scorer(bucket), prot, num_items)
    if warm is not None:
        from models.export import item_embeddings  # noqa: PLC0415

        items = item_embeddings(warm.model, warm.item_features)
        users = _user_vectors(warm.model, dataset, split, config, prot.history)
        rows["two_tower_id_trained"] = _ranked(_dot_scorer(users, items), prot, num_items)
    ratio = {
        column: rows["two_tower_content_only"][column] / rows["popularity_known_count"][column]
        for column in (f"recall@{K}", f"test_recall@{K}")
        if rows["popularity_known_count"][column] > 0
    }
    return {
        "fraction": fraction,
        "seed": config.seed,
        "items": num_items,
        "eligible_items": int((np.bincount(split.train_full.item, minlength=num_items) > 0).sum()),
        "held_out_items": int(held.sum()),
        "users": int(np.unique(prot.targets.user).size),
        "targets": _distinct(prot.targets, num_items),
        "test_period_users": int(np.unique(prot.test_targets.user).size),
        "test_period_targets": _distinct(prot.test_targets, num_items),
        "cold_model": {
            "epochs": cold.best_epoch,
            "valid_recall@20": cold.valid_metrics.get("recall@20"),
            "train_interactions": len(cold_split.train_full),
            "item_id_dropout": config.tower.item_id_dropout,
            "cold_head_steps": config.cold_head_steps,
            "cold_head_cosine": cold.cold_head_cosine,
        },
        "models": rows,
        "content_only_over_popularity_known_count": ratio,
        "train_seconds": round(trained - started, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _distinct(interactions: Interactions, num_items: int) -> int:
    return int(np.unique(interactions.user * np.int64(num_items) + interactions.item).size)


def render_cold_table(table: dict[str, Any]) -> str:
    """Rows = placements; columns = Recall@20, NDCG@20 (all targets), then the test period."""
    columns = (f"recall@{K}", f"ndcg@{K}", f"test_recall@{K}", f"test_ndcg@{K}")
    rows: dict[str, Row] = table["models"]
    width = max(len(name) for name in [*rows, "placement"]) + 2
    lines = [
        f"cold-start items: {table['held_out_items']} of {table['items']} items held out "
        f"({table['fraction']:.0%} of the {table['eligible_items']} with a training interaction, "
        f"seed {table['seed']}); {table['users']} users, {table['targets']} targets; "
        f"test period {table['test_period_users']} users, {table['test_period_targets']} targets",
        "placement".ljust(width) + "".join(c.rjust(15) for c in columns),
    ]
    lines.append("-" * len(lines[-1]))
    for name, row in rows.items():
        cells = "".join((f"{row[c]:.4f}" if c in row else "—").rjust(15) for c in columns)
        lines.append(name.ljust(width) + cells)
    for column, ratio in table.get("content_only_over_popularity_known_count", {}).items():
        lines.append(f"two_tower_content_only / popularity_known_count ({column}): {ratio:.2f}x")
    return "\n".join(lines)
