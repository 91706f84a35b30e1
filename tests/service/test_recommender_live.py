"""`search_items`: each ranking policy over the bundle plus a live delta, on the tiny bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.catalog.bundle import Bundle, load_bundle
from service.catalog.filters import ItemFilter
from service.catalog.live import LiveItem
from service.catalog.retriever import DEFAULT_SEARCH
from service.policies import RankingPolicy
from service.recommender import search_items


@pytest.fixture
def bundle(bundle_dir: Path) -> Bundle:
    """A fresh load per test: the delta is mutable."""
    return load_bundle(bundle_dir)


@pytest.mark.parametrize("policy", ["score", "popularity_blend", "genre_diversity"])
def test_every_policy_merges_live_items_without_tombstones_or_repeats(
    bundle: Bundle, policy: str
) -> None:
    query = np.asarray(bundle.retriever.item_vector(3), dtype=np.float32)
    plain = search_items(
        bundle, RankingPolicy(name=policy), DEFAULT_SEARCH, query, 10,  # type: ignore[arg-type]
        excluded=set(), allowed=None, item_filter=None,
    )  # fmt: skip
    doomed, updated = plain[0].item_id, plain[1].item_id
    bundle.live.delete(doomed)
    twin = LiveItem(updated, "Updated", ("Drama",), 2001)
    bundle.live.upsert(twin, query)  # the query's own direction: the best live score there is
    bundle.live.upsert(LiveItem("fresh", "Fresh", ("Drama",), 2030), query * 0.5)
    found = search_items(
        bundle, RankingPolicy(name=policy), DEFAULT_SEARCH, query, 10,  # type: ignore[arg-type]
        excluded=set(), allowed=None, item_filter=None, excluded_ids=(),
    )  # fmt: skip
    ids = [i.item_id for i in found]
    assert len(ids) == 10 == len(set(ids))
    assert doomed not in ids and updated in ids
    assert next(i for i in found if i.item_id == updated).title == "Updated"


def test_live_items_honour_filters_and_id_exclusions(bundle: Bundle) -> None:
    query = np.asarray(bundle.retriever.item_vector(5), dtype=np.float32)
    bundle.live.upsert(LiveItem("fresh", "Fresh", ("Drama",), 2030), query)  # ties row 5: excluded

    def ids(item_filter: ItemFilter | None, excluded_ids: tuple[str, ...] = ()) -> list[str]:
        allowed = bundle.catalog.masks.allowed(item_filter)
        found = search_items(
            bundle, RankingPolicy(), DEFAULT_SEARCH, query, 5, excluded={5}, allowed=allowed,
            item_filter=item_filter, excluded_ids=excluded_ids,
        )  # fmt: skip
        assert len(found) == 5
        return [i.item_id for i in found]

    assert ids(None)[0] == "fresh"
    assert "fresh" not in ids(None, ("fresh",))
    assert "fresh" not in ids(ItemFilter(year_max=2000))
    assert "fresh" in ids(ItemFilter(genres_any=frozenset({"Drama"})))
