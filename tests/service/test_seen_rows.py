"""SeenRows: a seen set's rows are looked up once per change of the set, within a row budget."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from service.arms import Arm
from service.catalog.bundle import Bundle, load_bundle
from service.recommender import Event, Recommender, RecommendQuery
from service.seen_rows import SeenRows
from service.store import MemoryStore


class _Lookup:
    def __init__(self) -> None:
        self.ids = 0

    def __call__(self, ids: Iterable[str]) -> list[int]:
        out = [int(i) for i in ids]
        self.ids += len(out)
        return out


def _seen(n: int, start: int = 0) -> tuple[str, ...]:
    return tuple(str(i) for i in range(start, start + n))


def test_an_unchanged_set_is_looked_up_once() -> None:
    memo, lookup = SeenRows(min_seen=1), _Lookup()
    first = memo.rows("b1", "u", _seen(100), lookup)
    again = memo.rows("b1", "u", _seen(100), lookup)
    assert first == again == frozenset(range(100))
    assert lookup.ids == 100


def test_a_new_newest_id_or_size_recomputes() -> None:
    memo, lookup = SeenRows(min_seen=1), _Lookup()
    memo.rows("b1", "u", _seen(100), lookup)
    assert 100 in memo.rows("b1", "u", _seen(101), lookup)  # appended
    capped = memo.rows("b1", "u", _seen(101, start=1), lookup)  # at the cap: oldest dropped
    assert 0 not in capped and 101 in capped
    assert lookup.ids == 100 + 101 + 101


def test_each_bundle_has_its_own_rows() -> None:
    memo, lookup = SeenRows(min_seen=1), _Lookup()
    memo.rows("b1", "u", _seen(50), lookup)
    memo.rows("b2", "u", _seen(50), lookup)
    assert lookup.ids == 100 and len(memo) == 2


def test_the_row_budget_evicts_the_least_recent_users() -> None:
    memo, lookup = SeenRows(max_rows=250, min_seen=1), _Lookup()
    for user in ("a", "b", "c"):
        memo.rows("b1", user, _seen(100), lookup)
    assert memo.held <= 250 and len(memo) == 2
    memo.rows("b1", "c", _seen(100), lookup)  # still held: no lookup
    memo.rows("b1", "a", _seen(100), lookup)  # evicted: looked up again
    assert lookup.ids == 400


def test_small_sets_are_not_memoised() -> None:
    memo, lookup = SeenRows(min_seen=32), _Lookup()
    memo.rows("b1", "u", _seen(10), lookup)
    memo.rows("b1", "u", _seen(10), lookup)
    assert lookup.ids == 20 and len(memo) == 0


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


async def test_a_memoised_seen_set_still_excludes_what_is_added_to_it(bundle: Bundle) -> None:
    """Through the real request path: a 100-item seen set, then one more negative event for the
    item the user would get first: it is never recommended, nor any of the others."""
    service = Recommender(MemoryStore(history_length=50, cache_ttl_seconds=60))
    arm = Arm("default", bundle)
    user = next(iter(bundle.catalog.users))
    rows = np.random.default_rng(3).choice(len(bundle.catalog), size=100, replace=False)
    hidden = [bundle.catalog.item_ids[int(r)] for r in rows]
    events = [Event(user, item, "hide", timestamp=float(n)) for n, item in enumerate(hidden)]
    await service.ingest(events, bundle.catalog)

    def page(exclude: str) -> RecommendQuery:  # an exclusion: past the page memo every time
        return RecommendQuery(user_id=user, k=20, exclude_item_ids=(exclude,))

    first = await service.recommend(arm, page(hidden[0]), "r1")
    assert not set(hidden) & {i.item_id for i in first.items}
    top = first.items[0].item_id
    await service.ingest([Event(user, top, "hide", timestamp=1_000.0)], bundle.catalog)
    second = await service.recommend(arm, page(hidden[1]), "r2")
    assert len(second.items) == 20
    assert not {*hidden, top} & {i.item_id for i in second.items}
