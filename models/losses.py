"""Retrieval losses over a shared candidate set.

Every loss sees the same inputs, so they can be swapped by name:
- `logits` `[rows, candidates]`: scores / temperature (minus log q for the softmax losses,
  see `corrected_logits`);
- `positives` `[rows, k]`: candidate column of each of the row's targets, `-1` where absent
  (column 0 always present).
- `ignore` (optional) `[rows, m]`: candidate columns that are neither positive nor negative
  (e.g. items the user already has, which the evaluation excludes anyway), `-1` where absent.
Every other candidate of the row is its negative: a candidate that is one of the row's positives
(an accidental hit) is masked out of the negatives. Each loss is the mean over (row, positive).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

LossName = Literal["logq", "dexml", "auc"]
LOSS_NAMES: tuple[LossName, ...] = ("logq", "dexml", "auc")
_NEG_INF = -1e9


def corrected_logits(scores: Tensor, log_q: Tensor | None, temperature: float) -> Tensor:
    """Yi et al. (RecSys 2019): subtract the log sampling probability of each candidate so the
    sampled softmax estimates the full one instead of over-penalising popular items."""
    logits = scores / temperature
    return logits if log_q is None else logits - log_q.unsqueeze(0)


def _split(
    logits: Tensor, positives: Tensor, ignore: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(positive logits [rows, k], their validity, logits with positives and ignored masked)."""
    valid = positives >= 0
    filled = torch.where(valid, positives, positives[:, :1])  # column 0 is always a positive
    if ignore is not None:  # -1 -> column 0's positive, which is masked anyway
        filled_ignore = torch.where(ignore >= 0, ignore, positives[:, :1])
        masked = torch.cat([filled, filled_ignore], dim=1)
    else:
        masked = filled
    pos = logits.gather(1, filled)
    negatives_only = logits.scatter(1, masked, _NEG_INF)
    return pos, valid, negatives_only


def _mean(values: Tensor, valid: Tensor) -> Tensor:
    return (values * valid).sum() / valid.sum().clamp(min=1)


def sampled_softmax(logits: Tensor, positives: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy of each positive against the row's negatives (the row's other
    positives are accidental hits, left out of the denominator)."""
    pos, valid, negatives = _split(logits, positives, ignore)
    neg = negatives.logsumexp(dim=1, keepdim=True)
    return _mean(torch.logaddexp(neg, pos) - pos, valid)


def decoupled_softmax(logits: Tensor, positives: Tensor, ignore: Tensor | None = None) -> Tensor:
    """DEXML (Gupta et al., ICLR 2024): the positive is removed from its own denominator,
    loss = -s_pos + logsumexp(negatives), so the positives of a multi-label row never compete."""
    pos, valid, negatives = _split(logits, positives, ignore)
    neg = negatives.logsumexp(dim=1, keepdim=True)
    return _mean(neg - pos, valid)


def auc_loss(logits: Tensor, positives: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Smooth 1 - AUC (Mann-Whitney): mean softplus(s_neg - s_pos) over positive-negative
    pairs ("Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval")."""
    pos, valid, negatives = _split(logits, positives, ignore)
    weights = (negatives > _NEG_INF / 2).to(logits.dtype)
    count = weights.sum(1).clamp(min=1)
    per_positive = torch.stack(
        [
            (F.softplus(logits - pos[:, j : j + 1]) * weights).sum(1) / count
            for j in range(pos.shape[1])
        ],
        dim=1,
    )  # one [rows, candidates] slab at a time: rows x k x candidates would not fit
    return _mean(per_positive, valid)


LOSSES: dict[LossName, Callable[[Tensor, Tensor, Tensor | None], Tensor]] = {
    "logq": sampled_softmax,
    "dexml": decoupled_softmax,
    "auc": auc_loss,
}

# The manifest's `training.loss` names.
MANIFEST_NAMES: dict[LossName, str] = {
    "logq": "logq_softmax",
    "dexml": "decoupled_softmax",
    "auc": "auc",
}
