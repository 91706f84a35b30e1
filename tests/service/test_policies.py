"""Ranking policies on the session's tiny real bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.catalog.bundle import Bundle, load_bundle
from service.catalog.filters import Allowed, pack
from service.catalog.retriever import SearchSettings
from service.policies import RankingPolicy, rank

SETTINGS = SearchSettings(overfetch=4.0)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def query(bundle: Bundle) -> np.ndarray:
    return bundle.encoder.encode(1, bundle.catalog.popularity_rows[:3].tolist())


def test_score_policy_is_the_plain_search(bundle: Bundle, query: np.ndarray) -> None:
    excluded = {0, 1, 2}
    expected = bundle.retriever.search(query, 10, excluded=excluded, settings=SETTINGS)
    got = rank(bundle, RankingPolicy(), SETTINGS, query, 10, excluded=excluded, allowed=None)
    assert got == expected


def test_full_popularity_weight_is_the_popularity_list(bundle: Bundle, query: np.ndarray) -> None:
    popular = bundle.catalog.popularity_rows.tolist()
    excluded = set(popular[:2])
    rows, scores = rank(
        bundle,
        RankingPolicy("popularity_blend", popularity_weight=1.0),
        SETTINGS,
        query,
        10,
        excluded=excluded,
        allowed=None,
    )
    assert rows == popular[2:12]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(
        bundle.catalog.popularity_scores[2] / bundle.catalog.popularity_scores.max()
    )


def test_popularity_blend_respects_the_filter(bundle: Bundle, query: np.ndarray) -> None:
    mask = np.zeros(len(bundle.catalog), dtype=np.bool_)
    mask[::3] = True
    allowed = Allowed.of(pack(mask), len(mask))
    rows, _ = rank(
        bundle,
        RankingPolicy("popularity_blend", popularity_weight=0.5),
        SETTINGS,
        query,
        10,
        excluded=set(),
        allowed=allowed,
    )
    assert len(rows) == 10
    assert all(row % 3 == 0 for row in rows)


def test_zero_weights_keep_the_model_order(bundle: Bundle, query: np.ndarray) -> None:
    plain, _ = rank(bundle, RankingPolicy(), SETTINGS, query, 10, excluded=set(), allowed=None)
    for policy in (
        RankingPolicy("popularity_blend", popularity_weight=0.0),
        RankingPolicy("genre_diversity", diversity=0.0),
    ):
        rows, _ = rank(bundle, policy, SETTINGS, query, 10, excluded=set(), allowed=None)
        assert rows == plain


def test_genre_diversity_spreads_genres(bundle: Bundle, query: np.ndarray) -> None:
    genres = bundle.catalog.genres
    plain, _ = rank(bundle, RankingPolicy(), SETTINGS, query, 10, excluded=set(), allowed=None)
    diverse, scores = rank(
        bundle,
        RankingPolicy("genre_diversity", diversity=10.0),
        SETTINGS,
        query,
        10,
        excluded=set(),
        allowed=None,
    )
    assert diverse[0] == plain[0]
    assert len(set(diverse)) == 10
    pool, _ = bundle.retriever.search(query, 40, settings=SETTINGS)
    # the second pick shares no genre with the first whenever the pool allows it
    if any(not set(genres[row]) & set(genres[diverse[0]]) for row in pool[1:]):
        assert not set(genres[diverse[1]]) & set(genres[diverse[0]])
    covered = len({g for row in diverse for g in genres[row]})
    assert covered >= len({g for row in plain for g in genres[row]})
    assert len(scores) == 10
