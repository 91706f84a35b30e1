"""A bounded sample of one bundle's ids, for load generators that cannot read the bundle.

A load test against a remote deployment has no bundle directory; it asks the service instead.
The cost is O(sample), never O(catalog): items are the head of the popularity ranking (so a
Zipf draw over them keeps its meaning), topped up with random rows; users are random rows.
Years come from the sampled items only, which is enough to draw plausible filter ranges.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from service.catalog.items import Catalog

MAX_SAMPLE = 10_000


@dataclass(frozen=True, slots=True)
class IdSample:
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    """Most popular first."""
    genres: tuple[str, ...]
    year_min: int
    year_max: int


def _random_rows(n: int, k: int, rng: random.Random, exclude: set[int]) -> list[int]:
    """k distinct rows in [0, n) outside `exclude`, by rejection: O(k) while k << n."""
    k = min(k, n - len(exclude))
    if k <= 0:
        return []
    if k * 2 > n:  # dense: one permutation is cheaper than rejection
        return [r for r in rng.sample(range(n), n) if r not in exclude][:k]
    picked: set[int] = set()
    order: list[int] = []
    while len(order) < k:
        row = rng.randrange(n)
        if row not in picked and row not in exclude:
            picked.add(row)
            order.append(row)
    return order


def sample_ids(catalog: Catalog, *, users: int, items: int, rng: random.Random) -> IdSample:
    """Up to `users` user ids and `items` item ids of the catalog (each at most MAX_SAMPLE)."""
    if not (0 <= users <= MAX_SAMPLE and 0 <= items <= MAX_SAMPLE):
        raise ValueError(f"sample sizes must be within 0..{MAX_SAMPLE}")
    head = [int(r) for r in catalog.popularity_rows[:items]]
    rows = head + _random_rows(len(catalog), items - len(head), rng, set(head))
    user_rows = _random_rows(len(catalog.users), users, rng, set())
    years = [int(catalog.years[r]) for r in rows]
    dated = [y for y in years if y > 0]
    return IdSample(
        user_ids=tuple(catalog.users.ids[r] for r in user_rows),
        item_ids=tuple(catalog.item_ids[r] for r in rows),
        genres=catalog.genres.vocab,
        year_min=min(dated, default=1950),
        year_max=max(dated, default=2020),
    )
