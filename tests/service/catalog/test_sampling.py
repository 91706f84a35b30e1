"""sample_ids on the session's real tiny bundle: bounded, distinct, known, popular first."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from service.catalog.bundle import load_bundle
from service.catalog.columns import read_strings
from service.catalog.sampling import MAX_SAMPLE, sample_ids


def test_sample_is_bounded_distinct_known_and_popular_first(bundle_dir: Path) -> None:
    catalog = load_bundle(bundle_dir).catalog
    users, items = set(read_strings(bundle_dir, "user_ids")), read_strings(bundle_dir, "item_ids")
    popular = [p["item_id"] for p in json.loads((bundle_dir / "popularity.json").read_text())]
    sample = sample_ids(catalog, users=5, items=7, rng=random.Random(1))
    assert len(sample.user_ids) == 5 and len(set(sample.user_ids)) == 5
    assert set(sample.user_ids) <= users
    assert len(sample.item_ids) == 7 and len(set(sample.item_ids)) == 7
    assert set(sample.item_ids) <= set(items)
    head = [i for i in popular if i in set(items)][:7]
    assert list(sample.item_ids[: len(head)]) == head
    assert sample.genres == catalog.genres.vocab
    assert sample.year_min <= sample.year_max


def test_a_sample_larger_than_the_catalog_returns_all_of_it_once(bundle_dir: Path) -> None:
    catalog = load_bundle(bundle_dir).catalog
    sample = sample_ids(catalog, users=MAX_SAMPLE, items=MAX_SAMPLE, rng=random.Random(2))
    assert sorted(sample.item_ids) == sorted(read_strings(bundle_dir, "item_ids"))
    assert sorted(sample.user_ids) == sorted(read_strings(bundle_dir, "user_ids"))


def test_random_rows_differ_between_draws(bundle_dir: Path) -> None:
    catalog = load_bundle(bundle_dir).catalog
    if len(catalog.users) < 20:
        pytest.skip("the tiny bundle is too small for distinct draws")
    draws = {sample_ids(catalog, users=3, items=0, rng=random.Random(s)).user_ids for s in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize("users, items", [(-1, 1), (1, MAX_SAMPLE + 1)])
def test_out_of_bounds_sizes_are_refused(bundle_dir: Path, users: int, items: int) -> None:
    with pytest.raises(ValueError, match="within"):
        sample_ids(load_bundle(bundle_dir).catalog, users=users, items=items, rng=random.Random())
