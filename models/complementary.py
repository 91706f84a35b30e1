"""Complementary items: dual (IN/OUT) item embeddings learnt by skip-gram with negative sampling.

An item's IN vector scored against another's OUT vector says "bought after", which is
asymmetric, unlike the two-tower item-item cosine ("similar"). Pairs come from each user's
chronological sequence: item t -> items t+1..t+window, a pair d steps apart weighing 1/d.
Sparse embeddings with plain SGD (or SparseAdam) keep one step O(batch) at a million items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional

from models.bundle_files import UNLEARNT_BIAS
from models.types import FloatArray, IntArray, Interactions

COMPLEMENTARY_MAX_ITEMS = 200_000
"""Default cut-off of `models build --complementary`: IN + OUT are 2 tables of [items, 64]
float32 while training with SGD (4 with SparseAdam's two moments: 1 GB at a million items),
512 MB on disk."""

Scorer = Callable[[IntArray], FloatArray]
"""Query item rows -> scores [len(rows), num_items]."""


@dataclass(frozen=True)
class SGNSConfig:
    """Defaults chosen by `models tune-dual` on validation next-item pairs (README,
    "Next item given an item"): ml-1m and ml-latest-small, never their test parts."""

    dim: int = 64
    window: int = 5
    negatives: int = 5
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 0.1
    seed: int = 0
    ns_exponent: float = 0.25
    """Negatives drawn from count^ns_exponent (word2vec's 0.75; 0 = uniform over the items
    seen, negative = rare items more often). Items never seen are never drawn."""
    distance_power: float = 1.0
    """A pair d steps apart weighs d^-distance_power in the loss (0 = every pair alike)."""
    lr_decay: bool = True
    """Learning rate decays linearly to 0 over the run (word2vec), else stays at `lr`."""
    l2: float = 0.0
    """Squared-norm penalty on the rows a pair touches (IN, OUT and its negatives' OUT), so a
    row is shrunk as often as it is used; the step stays O(batch)."""
    optimizer: str = "sgd"
    """`sparse_adam` (loss averaged over the batch) or `sgd` (summed over it, word2vec's
    per-pair step `lr`, see `SUMMED_USES_CAP`); both update only the rows in the batch."""


def wants_complementary(flag: bool | None, num_items: int) -> bool:
    """Explicit flag wins; by default on up to `COMPLEMENTARY_MAX_ITEMS` items."""
    return num_items <= COMPLEMENTARY_MAX_ITEMS if flag is None else flag


def follow_pairs(interactions: Interactions, window: int) -> tuple[IntArray, IntArray]:
    """(item, item following within `window` steps) per user; input sorted by user, time."""
    heads, tails, _ = pairs_by_distance(interactions, window)
    return heads, tails


def pairs_by_distance(
    interactions: Interactions, window: int
) -> tuple[IntArray, IntArray, IntArray]:
    """`follow_pairs` and how many steps apart each pair is (1..window)."""
    heads: list[IntArray] = []
    tails: list[IntArray] = []
    steps: list[IntArray] = []
    for d in range(1, window + 1):
        same_user = interactions.user[d:] == interactions.user[:-d]
        heads.append(interactions.item[:-d][same_user])
        tails.append(interactions.item[d:][same_user])
        steps.append(np.full(int(same_user.sum()), d, dtype=np.int64))
    return (
        np.concatenate(heads).astype(np.int64),
        np.concatenate(tails).astype(np.int64),
        np.concatenate(steps),
    )


def negative_distribution(item: IntArray, num_items: int, exponent: float) -> FloatArray:
    """P(item drawn as a negative) ∝ count^exponent over the items seen; 0 for the others."""
    counts = np.bincount(item, minlength=num_items).astype(np.float64)
    seen = counts > 0
    weights = np.zeros(num_items, dtype=np.float64)
    weights[seen] = counts[seen] ** exponent
    law: FloatArray = (weights / weights.sum()).astype(np.float32)
    return law


def train_dual(
    interactions: Interactions, num_items: int, config: SGNSConfig = SGNSConfig()
) -> tuple[FloatArray, FloatArray]:
    """IN and OUT tables, float32 [num_items, dim]; negatives from `negative_distribution`."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    heads_np, tails_np, steps = pairs_by_distance(interactions, config.window)
    heads, tails = torch.from_numpy(heads_np), torch.from_numpy(tails_np)
    pair_weight = torch.from_numpy(steps.astype(np.float32) ** -config.distance_power)
    noise = torch.from_numpy(
        negative_distribution(interactions.item, num_items, config.ns_exponent).astype(np.float64)
    )
    emb_in = torch.nn.Embedding(num_items, config.dim, sparse=True)
    emb_out = torch.nn.Embedding(num_items, config.dim, sparse=True)
    torch.nn.init.uniform_(emb_in.weight, -0.5 / config.dim, 0.5 / config.dim)
    torch.nn.init.zeros_(emb_out.weight)
    tables = [emb_in.weight, emb_out.weight]
    if config.optimizer not in {"sparse_adam", "sgd"}:
        raise ValueError(f"unknown SGNS optimizer {config.optimizer!r}")
    summed = config.optimizer == "sgd"
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(tables, lr=config.lr)
        if summed
        else torch.optim.SparseAdam(tables, lr=config.lr)
    )
    total_steps = max(config.epochs * -(-len(heads) // config.batch_size), 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(1.0 - step / total_steps, 1e-4) if config.lr_decay else 1.0
    )
    for _ in range(config.epochs):
        order = torch.randperm(len(heads), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            h, t, w = heads[batch], tails[batch], pair_weight[batch]
            neg = torch.multinomial(
                noise, len(batch) * config.negatives, replacement=True, generator=generator
            ).view(len(batch), config.negatives)
            v, u, u_neg = emb_in(h), emb_out(t), emb_out(neg)
            pos = (v * u).sum(-1)
            negs = torch.bmm(u_neg, v.unsqueeze(-1)).squeeze(-1)
            per_pair = -functional.logsigmoid(pos) - functional.logsigmoid(-negs).sum(-1)
            if config.l2 > 0:
                norms = v.square().sum(-1) + u.square().sum(-1) + u_neg.square().sum((-1, -2))
                per_pair = per_pair + config.l2 * norms
            loss = (per_pair * w).sum() if summed else (per_pair * w).sum() / w.sum()
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            if summed:
                _cap_summed_uses(emb_in.weight, h)
                _cap_summed_uses(emb_out.weight, torch.cat([t, neg.view(-1)]))
            optimizer.step()
            schedule.step()
    return (
        emb_in.weight.detach().numpy().astype(np.float32),
        emb_out.weight.detach().numpy().astype(np.float32),
    )


SUMMED_USES_CAP = 32
"""With `sgd`, a row used n times in a batch moves by the sum of its n gradients up to n = 32,
by 32 x their mean beyond: summed SGD diverges once an item recurs hundreds of times per batch
(a small, dense catalog), which word2vec's one-pair-at-a-time updates never do. At 4096 pairs
a batch, no row of ml-latest-small or ml-1m reaches 32 (the most used: 17-31)."""


def _cap_summed_uses(table: torch.Tensor, rows: torch.Tensor) -> None:
    """Scale the sparse gradient of each row used n > `SUMMED_USES_CAP` times by cap / n."""
    grad = table.grad
    assert grad is not None and grad.is_sparse  # noqa: S101 - sparse embeddings, after backward
    _, counts = torch.unique(rows, return_counts=True)  # sorted, as the coalesced indices
    if int(counts.max()) <= SUMMED_USES_CAP:
        return
    grad = grad.coalesce()
    scale = (SUMMED_USES_CAP / counts.clamp(min=SUMMED_USES_CAP)).to(grad.values().dtype)
    values = grad.values() * scale.unsqueeze(-1)
    table.grad = torch.sparse_coo_tensor(
        grad.indices(), values, grad.shape, is_coalesced=True, check_invariants=False
    )


def serving_tables(
    item_in: FloatArray, item_out: FloatArray, interactions: Interactions, window: int
) -> tuple[FloatArray, FloatArray]:
    """The IN and OUT tables as the bundle stores them, [num_items, dim + 1]: the last column is
    a bias, so `IN'[a] . OUT'[b] = IN[a] . OUT[b] + bias[b]`.

    - An item that never starts a training pair keeps its random initialisation: its IN row
      becomes all zeros (bias column included), which the bundle format reads as "no dual
      embedding" (the service falls back to similar items and says so). Others carry 1.
    - An item whose OUT row was never trained (no interaction at all: neither a follower nor
      a negative) has an all-zero OUT row, which would score 0 and outrank every learnt item a
      query scores below 0: its bias is `UNLEARNT_BIAS`, the others' 0. The search stays a
      plain inner product, so FAISS and the exact scan need no per-request exclusion set.
    """
    heads, _ = follow_pairs(interactions, window)
    learnt_in = np.zeros(len(item_in), dtype=np.bool_)
    learnt_in[heads] = True
    learnt_out = np.any(item_out != 0, axis=1)
    served_in = np.hstack([item_in * learnt_in[:, None], learnt_in[:, None]]).astype(np.float32)
    bias = np.where(learnt_out, 0.0, UNLEARNT_BIAS)[:, None]
    served_out = np.hstack([item_out, bias]).astype(np.float32)
    return served_in, served_out


def next_pairs(interactions: Interactions) -> tuple[IntArray, IntArray]:
    """Consecutive (t, t+1) pairs of each user's sequence (the test split's)."""
    return follow_pairs(interactions, 1)


@dataclass(frozen=True)
class NextItemResult:
    recall: float
    """Share of pairs (t, t+1) with t+1 in the top k for t (t itself excluded); ties broken at
    random, in expectation: a target tied with others is a hit with the chance that it wins."""
    asymmetry: float
    """Among those hits, share where t is also in the top k for t+1 (1.0 = symmetric)."""


def next_item_recall(
    scorer: Scorer, heads: IntArray, tails: IntArray, k: int = 20, batch: int = 1024
) -> NextItemResult:
    """Next-item-given-item Recall@k and how often the reverse direction ranks as well."""
    forward = _hits(scorer, heads, tails, k, batch)
    backward = _hits(scorer, tails, heads, k, batch)
    hits = float(forward.sum())
    return NextItemResult(
        recall=hits / max(len(heads), 1),
        asymmetry=float((forward * backward).sum()) / hits if hits > 0 else 0.0,
    )


def _hits(scorer: Scorer, queries: IntArray, targets: IntArray, k: int, batch: int) -> np.ndarray:
    """Per pair, the probability that the target ranks in the top k when ties are broken at
    random: with `g` items scoring above it and `e` others tied, min(1, max(0, (k-g)/(e+1))).
    Counting a tie as a win would credit sparse scorers (co-occurrence counts are mostly 0)
    with every target they know nothing about."""
    out = np.zeros(len(queries), dtype=np.float64)
    for start in range(0, len(queries), batch):
        q, t = queries[start : start + batch], targets[start : start + batch]
        scores = scorer(q).astype(np.float64, copy=True)
        scores[np.arange(len(q)), q] = -np.inf
        target = scores[np.arange(len(q)), t][:, None]
        above = (scores > target).sum(1)
        tied = (scores == target).sum(1) - 1
        out[start : start + batch] = np.clip((k - above) / (tied + 1), 0.0, 1.0)
    return out


def dot_scorer(queries: FloatArray, keys: FloatArray) -> Scorer:
    """IN.OUT when given (IN, OUT); IN.IN or cosine with normalised rows."""
    return lambda rows: queries[rows] @ keys.T


def cooccurrence_scorer(interactions: Interactions, num_items: int, window: int = 1) -> Scorer:
    """Counts of `b` following `a` within `window` in the training sequences."""
    h, t = follow_pairs(interactions, window)
    matrix = sp.csr_matrix(
        (np.ones(len(h), dtype=np.float32), (h, t)), shape=(num_items, num_items)
    )
    return lambda rows: np.asarray(matrix[rows].todense(), dtype=np.float32)


def popularity_scorer(interactions: Interactions, num_items: int) -> Scorer:
    counts = np.bincount(interactions.item, minlength=num_items).astype(np.float32)
    return lambda rows: np.broadcast_to(counts, (len(rows), num_items))


def evaluate_next_item(
    train: Interactions,
    test: Interactions,
    num_items: int,
    two_tower_items: FloatArray | None,
    *,
    config: SGNSConfig = SGNSConfig(),
    k: int = 20,
    cooccurrence_window: int = 3,
) -> dict[str, NextItemResult]:
    """Next-item Recall@k on the test sequences: IN.OUT vs IN.IN, cosine, counts, popularity.
    The counts' window is the baseline's own, not `config.window`, so tuning SGNS leaves the
    bar where it was."""
    item_in, item_out = serving_tables(
        *train_dual(train, num_items, config), train, config.window
    )  # scored as the bundle serves them
    heads, tails = next_pairs(test)
    unit_in = _normalised(item_in[:, :-1])  # without the bias column
    scorers: dict[str, Scorer] = {
        "in_out": dot_scorer(item_in, item_out),
        "in_in": dot_scorer(unit_in, unit_in),
    }
    if two_tower_items is not None:
        unit = _normalised(two_tower_items)
        scorers["two_tower_cosine"] = dot_scorer(unit, unit)
    scorers["cooccurrence"] = cooccurrence_scorer(train, num_items, cooccurrence_window)
    scorers["popularity"] = popularity_scorer(train, num_items)
    return {name: next_item_recall(s, heads, tails, k) for name, s in scorers.items()}


def _normalised(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit
