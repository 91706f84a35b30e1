"""A synthetic interaction log with structure a model can learn, at any catalog size.

Users and items belong to latent clusters. Each user drifts, over their own timeline, from a
primary cluster to a secondary one, so that recent history predicts the next items better than
old history (order matters, as on MovieLens). Inside a cluster, items are picked by a Zipf
popularity, and a small share of picks ignores clusters altogether. Item content (genres,
title words, year) is derived from the cluster, so content features carry signal for cold
items. Everything is vectorised numpy: 1,000,000 items take seconds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.types import Dataset, Interactions, Items

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_SYLLABLES = ("ka", "lo", "mi", "ra", "to", "ve", "su", "ne", "pa", "di", "zu", "fo")
NOISE = 0.1  # share of picks drawn from global popularity, whatever the user's clusters
WORDS_PER_CLUSTER = 6


def generate(
    num_users: int,
    num_items: int,
    *,
    seed: int = 0,
    interactions_per_user: int = 30,
    num_clusters: int = 20,
    zipf_a: float = 1.1,
) -> Dataset:
    """The dataset, without its fingerprint (the loader module computes that)."""
    if num_users < 1 or num_items < 2 or interactions_per_user < 1 or num_clusters < 2:
        raise ValueError("synthesize needs ≥ 1 user, ≥ 2 items, ≥ 1 interaction, ≥ 2 clusters")
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, num_clusters, num_items)
    popularity = np.empty(num_items)
    popularity[rng.permutation(num_items)] = 1.0 / np.arange(1, num_items + 1) ** zipf_a
    counts = np.rint(interactions_per_user * rng.lognormal(0.0, 0.5, num_users)).astype(np.int64)
    counts = np.clip(counts, 3, max(3, num_items // 2))
    user_item, user_row = _sample_log(
        rng,
        counts,
        item_cluster=item_cluster,
        popularity=popularity,
        num_clusters=num_clusters,
    )
    # One interaction per (user, item): keep the first, in generation (= time) order, then the
    # first `counts[u]` of those (picks are oversampled so that repeats do not thin the log).
    _, first = np.unique(user_row * num_items + user_item, return_index=True)
    keep = np.sort(first)
    user_row, user_item = user_row[keep], user_item[keep]
    group_start = np.searchsorted(user_row, user_row, side="left")
    within = np.arange(len(user_row)) - group_start < counts[user_row]
    user_row, user_item = user_row[within], user_item[within]
    start = rng.integers(1_500_000_000, 1_560_000_000, num_users)
    gaps = rng.exponential(86_400.0, len(user_row)).astype(np.int64) + 1
    starts = np.r_[0, np.flatnonzero(np.diff(user_row)) + 1]
    cumulative = np.cumsum(gaps)
    offset = cumulative - np.repeat(
        cumulative[starts] - gaps[starts], np.diff(np.r_[starts, len(user_row)])
    )
    timestamp = start[user_row] + offset
    interactions = Interactions(
        user=user_row.astype(np.int64),
        item=user_item.astype(np.int64),
        timestamp=timestamp.astype(np.int64),
        weight=np.ones(len(user_row), dtype=np.float32),
    )
    return Dataset(
        name="synth",
        user_ids=(np.arange(1, num_users + 1).astype(str)).tolist(),
        items=_catalog(rng, item_cluster, num_clusters),
        interactions=interactions,
    )


def _sample_log(
    rng: np.random.Generator,
    counts: npt.NDArray[np.int64],
    *,
    item_cluster: npt.NDArray[np.int64],
    popularity: npt.NDArray[np.float64],
    num_clusters: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(item, user) per pick, twice `counts` picks per user, each user's picks in time order."""
    num_items = len(item_cluster)
    num_users = len(counts)
    draws = 2 * counts
    user_row = np.repeat(np.arange(num_users, dtype=np.int64), draws)
    first = np.r_[0, np.cumsum(draws)[:-1]]
    position = np.arange(len(user_row)) - np.repeat(first, draws)
    # Drift: the chance of a secondary-cluster pick grows from 0 to 1 over the user's timeline.
    progress = position / np.maximum(np.repeat(counts, draws) - 1, 1)
    primary = rng.integers(0, num_clusters, num_users)
    secondary = (primary + rng.integers(1, num_clusters, num_users)) % num_clusters
    cluster = np.where(rng.random(len(user_row)) < progress, secondary[user_row], primary[user_row])
    # Items sorted by cluster; a pick inside cluster c is a popularity-weighted draw in its range.
    by_cluster = np.argsort(item_cluster, kind="stable")
    cum = np.cumsum(popularity[by_cluster])
    bounds = np.searchsorted(item_cluster[by_cluster], np.arange(num_clusters + 1))
    low = np.r_[0.0, cum][bounds[:-1]]
    high = np.r_[0.0, cum][bounds[1:]]
    lo, hi = low[cluster], high[cluster]
    noise = rng.random(len(user_row)) < NOISE
    lo[noise], hi[noise] = 0.0, cum[-1]
    target = lo + rng.random(len(user_row)) * (hi - lo)
    picked = np.minimum(np.searchsorted(cum, target, side="right"), num_items - 1)
    return by_cluster[picked].astype(np.int64), user_row


def _catalog(
    rng: np.random.Generator, item_cluster: npt.NDArray[np.int64], num_clusters: int
) -> Items:
    num_items = len(item_cluster)
    # Genres: two per cluster, plus for a third of the items one random extra genre.
    cluster_genres = np.stack(
        [rng.choice(len(GENRES), 2, replace=False) for _ in range(num_clusters)]
    )
    extra = np.where(rng.random(num_items) < 1 / 3, rng.integers(0, len(GENRES), num_items), -1)
    table = np.empty(num_clusters * (len(GENRES) + 1), dtype=object)
    for c in range(num_clusters):
        base = [GENRES[g] for g in sorted(cluster_genres[c])]
        for e in range(-1, len(GENRES)):
            names = base if e < 0 or GENRES[e] in base else sorted([*base, GENRES[e]])
            table[c * (len(GENRES) + 1) + e + 1] = tuple(names)
    genres = table[item_cluster * (len(GENRES) + 1) + extra + 1].tolist()
    # Titles: a word of the cluster's vocabulary, a shared word, and a number.
    syl = np.array(_SYLLABLES, dtype=object)
    vocab = syl[rng.integers(0, len(syl), (num_clusters * WORDS_PER_CLUSTER, 3))].sum(axis=1)
    shared = syl[rng.integers(0, len(syl), (50, 2))].sum(axis=1)
    own = vocab[item_cluster * WORDS_PER_CLUSTER + rng.integers(0, WORDS_PER_CLUSTER, num_items)]
    common = shared[rng.integers(0, len(shared), num_items)]
    number = np.arange(1, num_items + 1).astype(str).astype(object)
    titles = (own + " " + common + " " + number).tolist()
    era = rng.integers(1930, 2020, num_clusters)
    years = np.clip(np.rint(era[item_cluster] + rng.normal(0, 6, num_items)), 1900, 2025)
    return Items(
        ids=number.tolist(),
        titles=titles,
        genres=genres,
        years=years.astype(np.int64),
    )
