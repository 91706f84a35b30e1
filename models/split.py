"""Per-user chronological split: the future of each user is held out, never a random sample.

For every user with n interactions (already sorted by time):
- test = the last `max(1, round(test_fraction * n))`; a user with a single interaction keeps
  it in train and has no test;
- valid = the last `round(valid_fraction * r)` of the r that remain (at least 1 when r ≥ 3,
  never all of them): the slice for tuning and early stopping, carved from train;
- train = the rest; `train_full` = train + valid, what a model is refit on before testing.

Rounding is half-up (`floor(x + 0.5)`), not Python's half-to-even.

Repeats are dropped from the evaluation targets: a test item the user already has in
`train_full` (or a valid item already in `train`, or a second copy inside the same slice) can
never be retrieved, because the ranking excludes the user's known items, so keeping it would
only cap every model's recall. MovieLens has no repeats; generic logs may. `Split.extra`
counts what was dropped. `train_full` keeps every pre-test interaction, repeats included: it
is the user's real history.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.types import Interactions, Split

BoolArray = npt.NDArray[np.bool_]


def chronological_split(
    interactions: Interactions,
    num_users: int,
    num_items: int,
    *,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
) -> Split:
    """Split sorted `interactions` per user into train / valid / test (see module doc)."""
    if not 0.0 < test_fraction < 1.0 or not 0.0 <= valid_fraction < 1.0:
        raise ValueError("fractions must lie in (0, 1) for test and [0, 1) for valid")
    user = interactions.user
    if len(user) and np.any(np.diff(user) < 0):
        raise ValueError("interactions must be sorted by user")
    counts = np.bincount(user, minlength=num_users).astype(np.int64)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.arange(len(user)) - first[user]
    n = counts[user]
    n_test = np.where(n >= 2, np.maximum(1, _round_half_up(test_fraction * n)), 0)
    rest = n - n_test
    n_valid = _round_half_up(valid_fraction * rest)
    n_valid = np.where(rest >= 3, np.maximum(n_valid, 1) if valid_fraction > 0 else 0, n_valid)
    n_valid = np.minimum(n_valid, np.maximum(rest - 1, 0))
    is_test = position >= rest
    is_valid = ~is_test & (position >= rest - n_valid)
    is_train = ~is_test & ~is_valid

    keys = user * np.int64(num_items) + interactions.item
    test_keep = is_test & ~np.isin(keys, keys[~is_test]) & _first_copy(keys, is_test)
    valid_keep = is_valid & ~np.isin(keys, keys[is_train]) & _first_copy(keys, is_valid)
    return Split(
        train=_take(interactions, is_train),
        valid=_take(interactions, valid_keep),
        test=_take(interactions, test_keep),
        train_full=_take(interactions, ~is_test),
        num_users=num_users,
        num_items=num_items,
        extra={
            "dropped_test_repeats": int(is_test.sum() - test_keep.sum()),
            "dropped_valid_repeats": int(is_valid.sum() - valid_keep.sum()),
            "test_users": int(np.unique(user[test_keep]).size),
        },
    )


def _round_half_up(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.int64]:
    rounded: npt.NDArray[np.int64] = np.floor(values + 0.5).astype(np.int64)
    return rounded


def _first_copy(keys: npt.NDArray[np.int64], mask: BoolArray) -> BoolArray:
    """True for the first occurrence of each key among `mask` rows (and for rows not in it)."""
    keep = np.ones(len(keys), dtype=bool)
    rows = np.flatnonzero(mask)
    _, first = np.unique(keys[rows], return_index=True)
    keep[rows] = False
    keep[rows[first]] = True
    return keep


def _take(interactions: Interactions, mask: BoolArray) -> Interactions:
    return Interactions(
        user=interactions.user[mask],
        item=interactions.item[mask],
        timestamp=interactions.timestamp[mask],
        weight=interactions.weight[mask],
    )
