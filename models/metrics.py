"""Full-ranking Recall@K and NDCG@K: every item is a candidate, none is sampled.

Sampled metrics (rank the target among 100 random negatives) flatter models and can reorder
them; a full ranking over the catalog is what retrieval actually does. A user's known items
are excluded (score -inf), since a recommender would never show them again.

Recall@K = hits / min(|targets|, K), so a perfect model scores 1 even when a user has more
targets than K. NDCG@K uses binary relevance, ideal DCG over min(|targets|, K) positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from models.types import FloatArray, IntArray, Interactions

SCORE_BUDGET = 64_000_000  # score-matrix cells per batch (256 MB of float32)


def evaluate_ranking(
    score_fn: Callable[[IntArray], FloatArray],
    *,
    exclude: Interactions,
    targets: Interactions,
    num_items: int,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean Recall@K / NDCG@K over the users that have targets, plus their count ("users")."""
    if not ks or min(ks) < 1:
        raise ValueError("ks must hold positive cut-offs")
    users = np.unique(targets.user)
    result = {f"recall@{k}": 0.0 for k in ks} | {f"ndcg@{k}": 0.0 for k in ks}
    if users.size == 0:
        return result | {"users": 0.0}
    top = min(max(ks), num_items)
    discount = 1.0 / np.log2(np.arange(2, top + 2))
    ideal = np.concatenate(([0.0], np.cumsum(discount)))
    target_keys = np.unique(targets.user * np.int64(num_items) + targets.item)
    exclude_sorted = np.argsort(exclude.user, kind="stable")
    exclude_users = exclude.user[exclude_sorted]
    exclude_lo = np.searchsorted(exclude_users, users, side="left")
    exclude_hi = np.searchsorted(exclude_users, users, side="right")
    target_count = np.bincount(target_keys // num_items, minlength=int(users.max()) + 1)
    step = max(1, min(batch_size, SCORE_BUDGET // max(num_items, 1)))
    sums = {key: 0.0 for key in result}
    for start in range(0, users.size, step):
        rows = users[start : start + step]
        scores = np.array(score_fn(rows), dtype=np.float32, copy=True)
        if scores.shape != (rows.size, num_items):
            raise ValueError(f"score_fn returned {scores.shape}, expected {(rows.size, num_items)}")
        lo, hi = exclude_lo[start : start + step], exclude_hi[start : start + step]
        picked = exclude_sorted[_ranges(lo, hi)]
        scores[np.repeat(np.arange(rows.size), hi - lo), exclude.item[picked]] = -np.inf
        ranked = _top_k(scores, top)
        hits = np.isin(rows[:, None] * np.int64(num_items) + ranked, target_keys)
        relevant = target_count[rows]
        for k in ks:
            kk = min(k, top)
            found = hits[:, :kk]
            denom = np.minimum(relevant, k)
            sums[f"recall@{k}"] += float((found.sum(axis=1) / denom).sum())
            dcg = (found * discount[:kk]).sum(axis=1)
            sums[f"ndcg@{k}"] += float((dcg / ideal[np.minimum(relevant, kk)]).sum())
    return {key: value / users.size for key, value in sums.items()} | {"users": float(users.size)}


def _top_k(scores: FloatArray, k: int) -> IntArray:
    """Indices of the k best scores per row, best first.

    Ties within the k are ordered by item row; which of several items tied at the k-th score
    make the cut is torch.topk's (deterministic on CPU) choice. torch.topk, not
    np.argpartition: over 64 users x 1M items it took 0.54 s against 12.3 s (same run, this
    project's 2-core box), and evaluation at a million items is mostly this call.
    """
    if k < scores.shape[1]:
        _, picked = torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False)
        part = picked.numpy()
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def _ranges(lo: IntArray, hi: IntArray) -> IntArray:
    """Concatenation of arange(lo[i], hi[i]) for all i, vectorised."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return (np.arange(total) + starts).astype(np.int64)
