"""Plain, immutable data shared by every stage of the offline pipeline.

Rows, not ids: every array holds *row indices* into `Dataset.user_ids` / `Dataset.items`, so
training and evaluation work on dense integer arrays. The dataset's own ids (strings) are kept
only to write the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Items:
    """Catalog in row order; `years[i] == 0` when unknown."""

    ids: list[str]
    titles: list[str]
    genres: list[tuple[str, ...]]
    years: IntArray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, sorted by (user, timestamp, original order)."""

    user: IntArray
    item: IntArray
    timestamp: IntArray
    weight: FloatArray

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class UserFeatures:
    """Categorical demographics: `values[u, f]` in `1..cardinalities[f]-1`, 0 = unknown."""

    names: list[str]
    cardinalities: list[int]
    values: IntArray


@dataclass(frozen=True)
class Dataset:
    name: str
    user_ids: list[str]
    items: Items
    interactions: Interactions
    user_features: UserFeatures | None = None
    fingerprint: str = ""

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Split:
    """Per-user chronological split.

    `test` is the last 20% of each user's interactions (at least one); `valid` is carved from
    the end of what remains and `train` is the rest. `train_full` = train + valid: what a model
    is refit on before the test evaluation, and what is excluded from the test ranking.
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    train_full: Interactions
    num_users: int
    num_items: int
    extra: dict[str, int] = field(default_factory=dict)
