"""One function per CLI verb: dataset in, measured model (and bundle) out.

`build` is also what the service's test fixtures call on a tiny synthetic dataset, so it must
stay quick with `TrainConfig.tiny()` and must never leave a partial bundle behind.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.baselines import run_baselines
from models.cold_items import evaluate_cold_items
from models.complementary import (
    SGNSConfig,
    evaluate_next_item,
    serving_tables,
    train_dual,
    wants_complementary,
)
from models.export import BundleInputs, ExportError, item_embeddings, write_bundle
from models.index import IndexSpec
from models.losses import MANIFEST_NAMES, LossName
from models.split import chronological_split
from models.strong import (
    HeldOut,
    baseline_rows,
    evaluate_held_out,
    hold_out,
    popularity_scores,
    positives_only,
    two_tower_scorer,
)
from models.train import TrainConfig, TrainResult, train
from models.types import Dataset, Split

METRIC_KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
Results = dict[str, dict[str, float]]


@dataclass
class BuildResult:
    bundle: Path
    manifest: dict[str, Any]
    metrics: Results
    curve: list[dict[str, float]]
    seconds: dict[str, float]


@dataclass
class EvaluationResult:
    dataset: str
    metrics: Results
    curves: dict[str, list[dict[str, float]]]
    seconds: dict[str, float]
    extra: dict[str, Any]


def _four(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in METRIC_KEYS}


def split_dataset(dataset: Dataset) -> Split:
    if len(dataset.interactions) == 0:
        raise ValueError(f"dataset {dataset.name!r} has no interactions")
    return chronological_split(dataset.interactions, dataset.num_users, dataset.num_items)


def _baselines(split: Split, *, seed: int, progress: bool) -> tuple[Results, float]:
    started = time.perf_counter()
    found = run_baselines(split, seed=seed, progress=progress)
    return {name: _four(m) for name, m in found.items()}, time.perf_counter() - started


def training_summary(config: TrainConfig, result: TrainResult) -> dict[str, Any]:
    return {
        "loss": MANIFEST_NAMES[config.loss],
        "epochs": result.best_epoch,
        "seed": config.seed,
        "pooling": config.tower.pooling,
        "config": asdict(config),
        "valid_recall@20": result.valid_metrics.get("recall@20"),
        "seconds": round(result.seconds, 2),
    }


def build(
    dataset: Dataset,
    out: Path,
    *,
    config: TrainConfig,
    with_baselines: bool = True,
    progress: bool = True,
    index_spec: IndexSpec | None = None,
    complementary: bool | None = None,
) -> BuildResult:
    """Split, train, evaluate (with baselines), export the bundle to `out`."""
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out}: output directory already exists (refusing to overwrite)")
    started = time.perf_counter()
    split = split_dataset(dataset)
    result = train(dataset, split, config, progress=progress)
    metrics: Results = {"two_tower": _four(result.test_metrics)}
    seconds = {"train": result.seconds}
    if with_baselines:
        baselines, seconds["baselines"] = _baselines(split, seed=config.seed, progress=progress)
        metrics.update(baselines)
    exported = time.perf_counter()
    trainer_users = _user_embeddings(dataset, split, config, result)
    dual = None
    sgns = SGNSConfig(seed=config.seed)
    if wants_complementary(complementary, dataset.num_items):
        dual_started = time.perf_counter()
        learnt = train_dual(split.train_full, dataset.num_items, sgns)
        dual = serving_tables(*learnt, split.train_full, sgns.window)
        seconds["complementary"] = time.perf_counter() - dual_started
    manifest = write_bundle(
        out,
        result.model,
        BundleInputs(
            dataset=dataset,
            train_full=split.train_full,
            item_features=result.item_features,
            training=training_summary(config, result),
            metrics=metrics,
            user_queries=trainer_users,
            dual=dual,
            dual_params=None if dual is None else asdict(sgns),
        ),
        index_spec=index_spec,
        progress=progress,
    )
    seconds["export"] = time.perf_counter() - exported
    seconds["total"] = time.perf_counter() - started
    return BuildResult(out, manifest, metrics, result.curve, seconds)


def _user_embeddings(
    dataset: Dataset, split: Split, config: TrainConfig, result: TrainResult
) -> Any:
    from models.train import Trainer  # noqa: PLC0415 - same package, avoids a wide import

    trainer = Trainer(dataset, split, config, progress=False)
    return trainer.embed_users(result.model, split.train_full).numpy()


@dataclass
class StrongResult:
    """The strong-generalization rows of one setting, and what a bundle would be built from."""

    held: HeldOut
    split: Split
    train: TrainResult
    metrics: Results
    extra: dict[str, Any]


def strong_generalization(
    dataset: Dataset,
    *,
    config: TrainConfig,
    positive_threshold: float | None = None,
    fraction: float = 0.15,
    with_baselines: bool = True,
    progress: bool = True,
) -> StrongResult:
    """Hold out users, train without them, score their futures from their contexts
    (models/strong.py): the two-tower as the service serves it, next to the baselines."""
    started = time.perf_counter()
    held = hold_out(
        dataset, fraction=fraction, seed=config.seed, positive_threshold=positive_threshold
    )
    split = split_dataset(held.train)
    result = train(held.train, split, config, progress=progress)
    items = item_embeddings(result.model, result.item_features)
    popularity = popularity_scores(split.train_full, held.num_items)
    scorer = two_tower_scorer(result.model, items, held, popularity=popularity)
    metrics: Results = {"two_tower": _four(evaluate_held_out(held, scorer))}
    extra: dict[str, Any] = {
        "held_out_users": held.num_users,
        "users_with_targets": int(np.unique(held.targets.user).size),
        "context_events": len(held.context),
        "targets": len(held.targets),
        "positive_threshold": positive_threshold,
        "train_seconds": round(result.seconds, 2),
    }
    if with_baselines:
        rows, chosen = baseline_rows(held, seed=config.seed)
        metrics.update({name: _four(row) for name, row in rows.items()})
        extra["baseline_params"] = chosen
    extra["seconds"] = round(time.perf_counter() - started, 2)
    return StrongResult(held, split, result, metrics, extra)


def evaluate(
    dataset: Dataset,
    *,
    config: TrainConfig,
    losses: tuple[LossName, ...] = ("logq",),
    with_baselines: bool = True,
    progress: bool = True,
    strong: tuple[float | None, ...] = (),
    positive_threshold: float | None = None,
    cold_items: bool = False,
) -> EvaluationResult:
    """Test metrics of the two-tower model (one run per loss) next to the baselines, trained and
    tested on the interactions weighted at least `positive_threshold` (None = all); with
    `strong`, a strong-generalization table per threshold in it (None = every interaction is a
    positive) in `extra["strong_generalization"]`, from the whole of `dataset`; with
    `cold_items`, the cold-start items table (models/cold_items.py) in
    `extra["cold_start_items"]`."""
    full, dataset = dataset, positives_only(dataset, positive_threshold)
    split = split_dataset(dataset)
    metrics: Results = {}
    curves: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    extra: dict[str, Any] = {"split": split.extra}
    first: TrainResult | None = None
    for loss in losses:
        name = "two_tower" if loss == losses[0] else f"two_tower_{loss}"
        result = train(dataset, split, replace(config, loss=loss), progress=progress)
        metrics[name] = _four(result.test_metrics)
        curves[name] = result.curve
        seconds[name] = round(result.seconds, 2)
        extra[name] = training_summary(replace(config, loss=loss), result)
        if loss == losses[0]:
            first = result
            started = time.perf_counter()
            two_tower_items = item_embeddings(result.model, result.item_features)
            found = evaluate_next_item(
                split.train_full, split.test, dataset.num_items, two_tower_items
            )
            extra["next_item_recall@20"] = {n: asdict(r) for n, r in found.items()}
            seconds["next_item"] = round(time.perf_counter() - started, 2)
    if with_baselines:
        baselines, took = _baselines(split, seed=config.seed, progress=progress)
        metrics.update(baselines)
        seconds["baselines"] = round(took, 2)
    if cold_items:
        extra["cold_start_items"] = evaluate_cold_items(
            dataset, split, config=replace(config, loss=losses[0]), warm=first, progress=progress
        )
        seconds["cold_start_items"] = extra["cold_start_items"]["seconds"]
    tables = {}
    for threshold in strong:
        sg = strong_generalization(
            full,
            config=replace(config, loss=losses[0]),
            positive_threshold=threshold,
            with_baselines=with_baselines,
            progress=progress,
        )
        tables[strong_label(threshold)] = {"models": sg.metrics, **sg.extra}
    if tables:
        extra["strong_generalization"] = tables
    return EvaluationResult(dataset.name, metrics, curves, seconds, extra)


def strong_label(threshold: float | None) -> str:
    return "all_positive" if threshold is None else f"below_{threshold:g}_negative"
