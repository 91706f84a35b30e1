"""Ranking policies of an arm: how retrieved candidates become the page the user sees.

`score` is the plain two-tower order. The others re-rank a candidate pool of `k · overfetch`
items, so they cost one larger search plus a little numpy:

- `popularity_blend`: `(1 - w) · cosine + w · popularity / max popularity` over the retrieved
  candidates together with the most popular allowed items, so `w = 1` is a popularity-only arm
  (the classic baseline for an A/B test) and `w = 0` the plain model.
- `genre_diversity`: greedy re-ranking that lowers an item's score by `λ` times the largest share
  of already-chosen items in one of its genres (a maximal-marginal-relevance variant).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from service.catalog.bundle import Bundle
from service.catalog.filters import Allowed
from service.catalog.retriever import SearchSettings, Vector

Ranked = tuple[list[int], list[float]]
PolicyName = Literal["score", "popularity_blend", "genre_diversity"]
_POPULARITY_CACHE = 8
_popularity: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()


@dataclass(frozen=True, slots=True)
class RankingPolicy:
    name: PolicyName = "score"
    popularity_weight: float = 0.3
    diversity: float = 0.3


SCORE = RankingPolicy()


def _popularity_by_row(bundle: Bundle) -> npt.NDArray[np.float32]:
    """Popularity scaled to [0, 1] by item row; memoised per bundle version."""
    dense = _popularity.get(bundle.version)
    if dense is None:
        catalog = bundle.catalog
        dense = np.zeros(len(catalog), dtype=np.float32)
        dense[catalog.popularity_rows] = catalog.popularity_scores
        top = float(dense.max()) if len(dense) else 0.0
        if top > 0:
            dense /= top
        dense.flags.writeable = False
        _popularity[bundle.version] = dense
        if len(_popularity) > _POPULARITY_CACHE:
            _popularity.popitem(last=False)
    else:
        _popularity.move_to_end(bundle.version)
    return dense


def _popular_candidates(
    bundle: Bundle, count: int, excluded: Collection[int], allowed: Allowed | None
) -> list[int]:
    chosen: list[int] = []
    for row in bundle.catalog.popularity_rows.tolist():
        if row not in excluded and (allowed is None or row in allowed):
            chosen.append(row)
            if len(chosen) == count:
                break
    return chosen


def _top(rows: npt.NDArray[np.int64], scores: npt.NDArray[np.floating], k: int) -> Ranked:
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order].tolist(), scores[order].tolist()


def _blend(bundle: Bundle, query: Vector, rows: list[int], weight: float, k: int) -> Ranked:
    candidates = np.unique(np.asarray(rows, dtype=np.int64))
    if not len(candidates):  # nothing qualifies (e.g. a filter no item passes): an empty page
        return [], []
    vectors = np.stack([bundle.retriever.item_vector(int(row)) for row in candidates])
    cosine = vectors @ query
    blended = (1.0 - weight) * cosine + weight * _popularity_by_row(bundle)[candidates]
    return _top(candidates, blended, k)


def _diversify(
    bundle: Bundle, rows: list[int], scores: list[float], k: int, strength: float
) -> Ranked:
    genres = bundle.catalog.genres
    vocab = sorted({genre for row in rows for genre in genres[row]})
    column = {genre: index for index, genre in enumerate(vocab)}
    matrix = np.zeros((len(rows), max(1, len(vocab))), dtype=np.float32)
    for index, row in enumerate(rows):
        for genre in genres[row]:
            matrix[index, column[genre]] = 1.0
    base = np.asarray(scores, dtype=np.float32)
    counts = np.zeros(matrix.shape[1], dtype=np.float32)
    remaining = np.ones(len(rows), dtype=np.bool_)
    chosen: list[int] = []
    chosen_scores: list[float] = []
    for step in range(min(k, len(rows))):
        penalty = (matrix * counts).max(axis=1) / max(step, 1)
        adjusted = np.where(remaining, base - strength * penalty, -np.inf)
        best = int(np.argmax(adjusted))
        chosen.append(rows[best])
        chosen_scores.append(float(adjusted[best]))
        remaining[best] = False
        counts += matrix[best]
    return chosen, chosen_scores


def rank(
    bundle: Bundle,
    policy: RankingPolicy,
    settings: SearchSettings,
    query: Vector,
    k: int,
    *,
    excluded: Collection[int],
    allowed: Allowed | None,
) -> Ranked:
    """The arm's top-`k` rows and the scores they were ranked by, best first."""
    retriever = bundle.retriever
    if policy.name == "score":
        return retriever.search(query, k, excluded=excluded, allowed=allowed, settings=settings)
    pool = min(retriever.size, max(k, math.ceil(k * settings.overfetch)))
    rows, scores = retriever.search(
        query, pool, excluded=excluded, allowed=allowed, settings=settings
    )
    if policy.name == "popularity_blend":
        popular = _popular_candidates(bundle, pool, excluded, allowed)
        return _blend(bundle, query, rows + popular, policy.popularity_weight, k)
    return _diversify(bundle, rows, scores, k, policy.diversity)
