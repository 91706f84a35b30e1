"""Chronological split: per-user fractions, time order, no overlap, repeats dropped."""

from __future__ import annotations

import numpy as np
import pytest

from models.split import chronological_split
from models.types import Interactions, Split


def _log(users: list[int], items: list[int]) -> Interactions:
    n = len(users)
    return Interactions(
        user=np.array(users, dtype=np.int64),
        item=np.array(items, dtype=np.int64),
        timestamp=np.arange(n, dtype=np.int64) * 10,
        weight=np.ones(n, dtype=np.float32),
    )


def _pairs(part: Interactions) -> set[tuple[int, int]]:
    return set(zip(part.user.tolist(), part.item.tolist(), strict=True))


def test_fractions_per_user() -> None:
    # user 0: 10 items, user 1: 1 item, user 2: 3 items, user 3: 4 items
    users = [0] * 10 + [1] + [2] * 3 + [3] * 4
    items = [*range(10), 0, 0, 1, 2, 5, 6, 7, 8]
    split = chronological_split(_log(users, items), 4, 10)
    assert split.test.user.tolist() == [0, 0, 2, 3]  # 20% of 10 = 2; 3 -> 1 (round 0.6); 4 -> 1
    assert split.test.item.tolist() == [8, 9, 2, 8]
    assert split.valid.user.tolist() == [0, 3]  # remainder 8 -> 1; 2 -> 0; 3 -> at least 1
    assert split.valid.item.tolist() == [7, 7]
    assert split.train.user.tolist().count(1) == 1  # a single interaction stays in train
    assert len(split.train) + len(split.valid) + len(split.test) == len(users)


def test_invariants_on_synthetic_data(tiny_split: Split) -> None:
    train, valid, test, full = tiny_split.train, tiny_split.valid, tiny_split.test, tiny_split
    assert not (_pairs(train) & _pairs(test)) and not (_pairs(valid) & _pairs(test))
    assert not (_pairs(train) & _pairs(valid))
    assert _pairs(full.train_full) == _pairs(train) | _pairs(valid)
    for part in (train, valid, test, full.train_full):
        assert np.all(np.diff(part.user) >= 0)
    # Chronology: every test interaction is later than all of the user's train_full ones.
    last_seen = np.full(full.num_users, -1, dtype=np.int64)
    np.maximum.at(last_seen, full.train_full.user, full.train_full.timestamp)
    assert np.all(test.timestamp >= last_seen[test.user])
    last_train = np.full(full.num_users, -1, dtype=np.int64)
    np.maximum.at(last_train, train.user, train.timestamp)
    assert np.all(valid.timestamp >= last_train[valid.user])
    total = len(full.train_full) + len(test)
    assert 0.17 < len(test) / total < 0.23
    assert 0.05 < len(valid) / len(full.train_full) < 0.15
    assert full.extra["dropped_test_repeats"] == 0  # synthetic logs hold no repeated pairs


def test_repeated_items_leave_the_targets_not_the_history() -> None:
    # user 0 re-watches item 1 at the end; item 4 appears twice inside the test slice.
    users = [0] * 10
    items = [1, 2, 3, 5, 6, 7, 8, 4, 4, 1]
    split = chronological_split(_log(users, items), 1, 10, test_fraction=0.3)
    assert split.test.item.tolist() == [4]
    assert split.extra["dropped_test_repeats"] == 2
    assert len(split.train_full) == 7


def test_rejects_bad_arguments() -> None:
    log = _log([1, 0], [0, 1])
    with pytest.raises(ValueError, match="sorted"):
        chronological_split(log, 2, 2)
    with pytest.raises(ValueError, match="fractions"):
        chronological_split(_log([0], [0]), 1, 1, test_fraction=1.0)
