"""Training: next-items prediction over each user's chronological history.

Every position of a user's train sequence predicts the next `targets_ahead` items, so one causal
pass over a window of `history_length` items gives `history_length` training rows. Candidates are
the batch's own targets plus uniformly sampled items, each logit corrected by the candidate's
inclusion probability (logQ); with `num_negatives >= num_items` the candidate set is the whole
catalog and the loss is the exact full softmax.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from tqdm import tqdm

from models.cold_head import COLD_HEAD_STEPS, fit_cold_head
from models.features import (
    TITLE_HASH_BUCKETS,
    ItemFeatures,
    build_item_features,
    history_matrix,
    user_sequences,
)
from models.losses import LOSSES, LossName, corrected_logits
from models.metrics import evaluate_ranking
from models.towers import TowerConfig, TwoTower
from models.types import Dataset, FloatArray, IntArray, Interactions, Split

Metrics = dict[str, float]
Counts = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainConfig:
    tower: TowerConfig = field(default_factory=TowerConfig)
    loss: LossName = "logq"
    max_epochs: int = 20
    patience: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 0.07
    num_negatives: int = 2048
    targets_ahead: int = 1
    window_stride: int = 0  # 0 = history_length (non-overlapping windows)
    mask_seen: bool = True
    max_windows_per_user: int = 0  # 0 = all; else a fresh random subset per user each epoch
    refit: bool = False
    seed: int = 0
    threads: int = 2
    title_hash_buckets: int = TITLE_HASH_BUCKETS
    eval_users: int = 2_000  # validation/test metrics on this seeded user sample; 0 = every user
    cold_head_steps: int = COLD_HEAD_STEPS  # fit of the unknown-item path after training; 0 = none

    @classmethod
    def tiny(cls, **overrides: Any) -> TrainConfig:
        """A few seconds on a few hundred users and items: for tests and fixtures."""
        base = cls(
            tower=TowerConfig(dim=16, history_length=10, num_layers=1, num_heads=1),
            max_epochs=3,
            patience=1,
            batch_size=64,
            learning_rate=5e-3,
            threads=1,
            title_hash_buckets=1000,
        )
        return replace(base, **overrides)

    @classmethod
    def for_dataset(cls, name: str) -> TrainConfig:
        """Defaults measured on the MovieLens sets; larger logs take bigger, faster steps."""
        if name == "ml-1m":
            return cls(batch_size=64, learning_rate=3e-3, max_epochs=12)
        if name == "synth":  # 1M items: fewer, bigger steps; a step's fixed cost dominates at 32
            return cls(batch_size=256, learning_rate=5e-3, max_epochs=3, patience=1)
        return cls()


@dataclass
class TrainResult:
    model: TwoTower
    item_features: ItemFeatures
    curve: list[dict[str, float]]
    best_epoch: int
    valid_metrics: Metrics
    test_metrics: Metrics
    seconds: float
    cold_head_cosine: float = float("nan")  # the cold head's mean cosine on the trained items


def sample_users(interactions: Interactions, count: int, *, seed: int) -> Interactions:
    """The interactions of a seeded sample of `count` users (all of them when fewer or 0)."""
    users = np.unique(interactions.user)
    if count <= 0 or len(users) <= count:
        return interactions
    chosen = np.random.default_rng(seed).choice(users, size=count, replace=False)
    keep = np.isin(interactions.user, chosen)
    return Interactions(
        interactions.user[keep],
        interactions.item[keep],
        interactions.timestamp[keep],
        interactions.weight[keep],
    )


def thread_count(threads: int) -> int:
    """`threads`, capped by OMP_NUM_THREADS when it is set (a shared machine's budget)."""
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(threads, int(cap))) if cap.isdigit() and int(cap) > 0 else threads


def seed_everything(seed: int, threads: int = 2) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(thread_count(threads))
    torch.use_deterministic_algorithms(True)


@dataclass(frozen=True)
class Windows:
    """Training windows: right-aligned inputs and, per position, the next items (-1 = none)."""

    user_idx: IntArray  # [W]
    inputs: IntArray  # [W, L]
    targets: IntArray  # [W, L, k]


def make_windows(
    sequences: list[IntArray], *, history_length: int, padding_idx: int, ahead: int, stride: int
) -> Windows:
    users: list[int] = []
    inputs: list[IntArray] = []
    targets: list[IntArray] = []
    offsets = np.arange(1, ahead + 1)
    for user, seq in enumerate(sequences):
        n = len(seq)
        end = n - 1  # inputs are seq[start:end]; the last item is only a target
        while end > 0:
            start = max(0, end - history_length)
            window = np.full(history_length, padding_idx, dtype=np.int64)
            window[history_length - (end - start) :] = seq[start:end]
            future = np.arange(start, end)[:, None] + offsets[None, :]
            picked = np.where(future < n, seq[np.minimum(future, n - 1)], -1)
            tgt = np.full((history_length, ahead), -1, dtype=np.int64)
            tgt[history_length - (end - start) :] = picked
            users.append(user + 1)
            inputs.append(window)
            targets.append(tgt)
            end -= stride
    if not users:
        raise ValueError("no training windows: every user has fewer than two train interactions")
    return Windows(np.asarray(users, dtype=np.int64), np.stack(inputs), np.stack(targets))


def epoch_order(windows: Windows, rng: np.random.Generator, per_user: int) -> IntArray:
    """Shuffled window indices; with `per_user > 0`, at most that many (random) per user, so
    heavy users stop dominating an objective that the metric averages per user."""
    if per_user <= 0:
        return np.asarray(rng.permutation(len(windows.user_idx)), dtype=np.int64)
    keys = rng.random(len(windows.user_idx))
    by_user = np.lexsort((keys, windows.user_idx))  # users in order, windows shuffled within
    users = windows.user_idx[by_user]
    starts = np.searchsorted(users, users, side="left")
    rank = np.arange(len(users)) - starts
    return np.asarray(rng.permutation(by_user[rank < per_user]), dtype=np.int64)


class _ItemInputs:
    """The item tower's inputs for every item row, as tensors."""

    def __init__(self, features: ItemFeatures) -> None:
        self.genres = torch.from_numpy(features.genres)
        self.year = torch.from_numpy(features.year)
        self.title = torch.from_numpy(features.title_tokens)

    def encode(self, model: TwoTower, rows: Tensor) -> Tensor:
        out: Tensor = model.item(rows, self.genres[rows], self.year[rows], self.title[rows])
        return out


def _log_inclusion(counts: Counts, total: float, num_targets: int, uniform: float) -> Tensor:
    """log P(item among the candidates): drawn by some target in the batch or by the sampler.

    `counts` are the candidates' own (the whole catalog's would cost O(items) per batch)."""
    p = counts / total
    in_batch = -np.expm1(num_targets * np.log1p(-np.minimum(p, 1 - 1e-9)))
    q = 1 - (1 - in_batch) * (1 - uniform)
    return torch.from_numpy(np.log(np.maximum(q, 1e-12)).astype(np.float32))


def _positions(candidates: Tensor, ids: Tensor) -> Tensor:
    """Column of each id in the sorted `candidates`, -1 where absent: O(batch log candidates),
    where a dense id -> column table would cost O(items) per batch."""
    found = torch.searchsorted(candidates, ids).clamp(max=len(candidates) - 1)
    return torch.where(candidates[found] == ids, found, -1)


class Optimizers:
    """SparseAdam for the embedding tables, AdamW for the rest.

    One dense AdamW over a million-row item table updates (and moves the moments of) every row
    on every batch; with sparse gradients a batch touches only the rows it used. Weight decay,
    when set, applies to the dense parameters only (SparseAdam has none)."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
        ids = {id(p) for p in tables}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self._all: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(dense, lr=config.learning_rate, weight_decay=config.weight_decay)
        ]
        if tables:
            self._all.append(torch.optim.SparseAdam(tables, lr=config.learning_rate))

    def zero_grad(self) -> None:
        for optimizer in self._all:
            optimizer.zero_grad()

    def step(self) -> None:
        for optimizer in self._all:
            optimizer.step()


class Trainer:
    def __init__(
        self,
        dataset: Dataset,
        split: Split,
        config: TrainConfig,
        *,
        progress: bool = True,
    ) -> None:
        self.dataset = dataset
        self.split = split
        self.config = config
        self.progress = progress
        self.item_features = build_item_features(
            dataset.items, title_hash_buckets=config.title_hash_buckets
        )
        self.items = _ItemInputs(self.item_features)
        self.num_items = split.num_items
        self._total = 1.0  # interactions (+1 per item) of the fit in progress, for logQ
        features = dataset.user_features
        self.user_features: Tensor | None = None
        if features is not None:
            rows = np.zeros((split.num_users + 1, len(features.names)), dtype=np.int64)
            rows[1:] = features.values
            self.user_features = torch.from_numpy(rows)

    def new_model(self) -> TwoTower:
        features = self.dataset.user_features
        return TwoTower(
            num_users=self.split.num_users,
            num_items=self.num_items,
            num_genres=len(self.item_features.genre_vocab),
            title_buckets=self.item_features.title_hash_buckets,
            config=self.config.tower,
            feature_cardinalities=None if features is None else features.cardinalities,
        )

    def _windows(self, interactions: Interactions) -> Windows:
        tower = self.config.tower
        return make_windows(
            user_sequences(interactions, self.split.num_users),
            history_length=tower.history_length,
            padding_idx=self.num_items,
            ahead=self.config.targets_ahead,
            stride=self.config.window_stride or tower.history_length,
        )

    def _step(self, model: TwoTower, windows: Windows, batch: IntArray, counts: Counts) -> Tensor:
        config = self.config
        user_idx = torch.from_numpy(windows.user_idx[batch])
        inputs = torch.from_numpy(windows.inputs[batch])
        targets = torch.from_numpy(windows.targets[batch])
        feats = None if self.user_features is None else self.user_features[user_idx]
        states = model.user.states(user_idx, inputs, feats)
        active = targets[:, :, 0] >= 0
        users = F.normalize(states[active], dim=-1)
        wanted = targets[active]  # [rows, k]
        num_items = self.num_items
        negatives = config.num_negatives
        if negatives >= num_items:
            candidates = torch.arange(num_items)
            log_q: Tensor | None = None
        else:
            if num_items > 4 * negatives:  # with replacement: randperm would be O(items)
                sampled = torch.randint(num_items, (negatives,))
                uniform = -math.expm1(negatives * math.log1p(-1.0 / num_items))
            else:
                sampled = torch.randperm(num_items)[:negatives]
                uniform = negatives / num_items
            candidates = torch.unique(torch.cat([wanted[wanted >= 0], sampled]))
            log_q = _log_inclusion(
                counts[candidates.numpy()], self._total, int((wanted >= 0).sum()), uniform
            )
        positives = torch.where(wanted >= 0, _positions(candidates, wanted.clamp(min=0)), -1)
        scores = users @ self.items.encode(model, candidates).T
        logits = corrected_logits(
            scores, log_q if config.loss != "auc" else None, config.temperature
        )
        ignore = None
        if config.mask_seen:  # the window's items: the user has them, evaluation excludes them
            seen = _positions(candidates, inputs)  # [batch, L]; padding maps to -1
            ignore = seen.unsqueeze(1).expand(-1, inputs.shape[1], -1)[active]
        return LOSSES[config.loss](logits, positives, ignore)

    def _epoch(
        self,
        model: TwoTower,
        optimizer: Optimizers,
        windows: Windows,
        *,
        counts: Counts,
        rng: np.random.Generator,
        epoch: int,
    ) -> float:
        model.train()
        order = epoch_order(windows, rng, self.config.max_windows_per_user)
        size = self.config.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        total = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not self.progress)
        for batch in bar:
            loss = self._step(model, windows, batch, counts)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        return total / max(len(batches), 1)

    def embed_users(self, model: TwoTower, history: Interactions) -> Tensor:
        """User-tower output for every known user, given `history` as their past."""
        model.eval()
        tower = self.config.tower
        matrix = history_matrix(
            user_sequences(history, self.split.num_users),
            history_length=tower.history_length,
            padding_idx=self.num_items,
        )
        out = []
        with torch.no_grad():
            for start in range(0, len(matrix), 1024):
                hist = torch.from_numpy(matrix[start : start + 1024])
                idx = torch.arange(start + 1, start + 1 + len(hist))
                feats = None if self.user_features is None else self.user_features[idx]
                out.append(model.user(idx, hist, feats))
        return torch.cat(out)

    def embed_items(self, model: TwoTower, batch: int = 65_536) -> Tensor:
        """Every item row through the item tower, in batches (bounded memory at 1M items)."""
        model.eval()
        with torch.no_grad():
            rows = torch.arange(self.num_items)
            parts = [rows[i : i + batch] for i in range(0, self.num_items, batch)]
            return torch.cat([self.items.encode(model, part) for part in parts])

    def evaluate(self, model: TwoTower, *, history: Interactions, targets: Interactions) -> Metrics:
        """Full-ranking metrics on a fixed, seeded sample of `eval_users` users (the same every
        epoch), so evaluation at a million items costs seconds; "users" says how many."""
        targets = sample_users(targets, self.config.eval_users, seed=self.config.seed)
        users = self.embed_users(model, history).numpy()
        items = self.embed_items(model).numpy()

        def score(rows: IntArray) -> FloatArray:
            return np.asarray(users[rows] @ items.T, dtype=np.float32)

        return evaluate_ranking(score, exclude=history, targets=targets, num_items=self.num_items)

    def _fit(
        self, interactions: Interactions, epochs: int, *, validate: bool
    ) -> tuple[TwoTower, list[dict[str, float]], int, Metrics]:
        seed_everything(self.config.seed, self.config.threads)
        rng = np.random.default_rng(self.config.seed)
        model = self.new_model()
        optimizer = Optimizers(model, self.config)
        windows = self._windows(interactions)
        counts = np.bincount(interactions.item, minlength=self.num_items).astype(np.float64) + 1.0
        self._total = float(counts.sum())
        curve: list[dict[str, float]] = []
        best: tuple[float, int, dict[str, Tensor], Metrics] = (-math.inf, 0, {}, {})
        stale = 0
        for epoch in range(1, epochs + 1):
            loss = self._epoch(model, optimizer, windows, counts=counts, rng=rng, epoch=epoch)
            point = {"epoch": float(epoch), "loss": loss}
            if validate:
                metrics = self.evaluate(model, history=self.split.train, targets=self.split.valid)
                point["valid_recall@20"] = metrics["recall@20"]
                if metrics["recall@20"] > best[0]:
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (metrics["recall@20"], epoch, state, metrics)
                    stale = 0
                else:
                    stale += 1
            curve.append(point)
            if self.progress:
                tqdm.write(" ".join(f"{k}={v:.4f}" for k, v in point.items()))
            if validate and stale >= self.config.patience:
                break
        if not validate:
            return model, curve, epochs, {}
        model.load_state_dict(best[2])
        return model, curve, best[1], best[3]

    def run(self) -> TrainResult:
        started = time.perf_counter()
        split = self.split
        model, curve, best_epoch, valid = self._fit(
            split.train, self.config.max_epochs, validate=True
        )
        fitted_on = split.train
        if self.config.refit:
            model, _, _, _ = self._fit(split.train_full, best_epoch, validate=False)
            fitted_on = split.train_full
        cold_cosine = fit_cold_head(
            model,
            self.item_features,
            np.bincount(fitted_on.item, minlength=self.num_items),
            steps=self.config.cold_head_steps,
            seed=self.config.seed,
        )
        test = self.evaluate(model, history=split.train_full, targets=split.test)
        return TrainResult(
            model=model,
            item_features=self.item_features,
            curve=curve,
            best_epoch=best_epoch,
            valid_metrics=valid,
            test_metrics=test,
            seconds=time.perf_counter() - started,
            cold_head_cosine=cold_cosine,
        )


def train(
    dataset: Dataset, split: Split, config: TrainConfig, *, progress: bool = True
) -> TrainResult:
    """Train with early stopping on validation Recall@20; test metrics on the best model."""
    return Trainer(dataset, split, config, progress=progress).run()
