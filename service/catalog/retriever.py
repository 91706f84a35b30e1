"""FAISS search that returns `k` items whenever `k` items qualify.

Two paths. Few exclusions and no filter: over-fetch `k + excluded` (times the arm's factor for
ANN indexes) with a plain search and drop the excluded rows — the cheapest call FAISS offers.
Otherwise: an `IDSelectorBitmap` of the allowed rows passed through search parameters. Either
way, if an approximate index still comes back short, exact scoring over the allowed rows
finishes the job, so filters and exclusions never silently shrink a page.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from service.catalog.filters import Mask

Vector = npt.NDArray[np.float32]
_PLAIN_PATH_MAX_EXCLUDED = 512


@dataclass(frozen=True, slots=True)
class SearchSettings:
    """Per-arm serving knobs; None keeps the bundle's own index parameters."""

    overfetch: float = 2.0
    ef_search: int | None = None
    nprobe: int | None = None


DEFAULT_SEARCH = SearchSettings()


class Retriever:
    def __init__(self, index: Any, embeddings: Vector, index_type: str) -> None:
        self._index = index
        self._embeddings = embeddings
        self._type = index_type
        self.size = int(index.ntotal)
        self.exact = index_type == "flat_ip"

    def _params(self, settings: SearchSettings, selector: Any | None) -> Any | None:
        if self._type == "hnsw":
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            if settings.ef_search is not None:
                params.efSearch = settings.ef_search
            else:
                params.efSearch = faiss.downcast_index(self._index).hnsw.efSearch  # type: ignore[attr-defined]
        elif self._type == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = settings.nprobe or faiss.extract_index_ivf(self._index).nprobe
        elif selector is None:
            return None
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        return params

    def _faiss(self, query: Vector, n: int, params: Any | None) -> tuple[list[int], list[float]]:
        scores, rows = self._index.search(query.reshape(1, -1), n, params=params)
        return rows[0].tolist(), scores[0].tolist()

    def search(
        self,
        query: Vector,
        k: int,
        *,
        excluded: Collection[int] = (),
        allowed: Mask | None = None,
        settings: SearchSettings = DEFAULT_SEARCH,
    ) -> tuple[list[int], list[float]]:
        """Top-`k` rows by inner product among allowed rows not in `excluded`, best first.

        Plain Python lists in and out: pages and exclusion lists are small, and numpy's
        per-call overhead (isin, unique) costs more than the work at this size.
        """
        seen = excluded if isinstance(excluded, (set, frozenset)) else set(excluded)
        if allowed is None and len(seen) <= _PLAIN_PATH_MAX_EXCLUDED:
            want = min(k, self.size - len(seen))
            if want <= 0:
                return [], []
            factor = 1.0 if self.exact else settings.overfetch
            fetch = min(self.size, int(k * factor) + len(seen))
            found, found_scores = self._faiss(query, fetch, self._params(settings, None))
            rows: list[int] = []
            scores: list[float] = []
            for row, score in zip(found, found_scores, strict=True):
                if row >= 0 and row not in seen:
                    rows.append(row)
                    scores.append(score)
                    if len(rows) == want:
                        return rows, scores
            mask = np.ones(self.size, dtype=np.bool_)
        else:
            mask = np.ones(self.size, dtype=np.bool_) if allowed is None else allowed.copy()
        if seen:
            mask[list(seen)] = False
        want = min(k, int(mask.sum()))
        if want <= 0:
            return [], []
        if allowed is not None or len(seen) > _PLAIN_PATH_MAX_EXCLUDED:
            bitmap = np.packbits(mask, bitorder="little")
            selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
            found, found_scores = self._faiss(query, want, self._params(settings, selector))
            pairs = [(r, s) for r, s in zip(found, found_scores, strict=True) if r >= 0]
            if len(pairs) >= want:
                return [r for r, _ in pairs], [s for _, s in pairs]
        return self._exact(query, mask, want)

    def _exact(self, query: Vector, mask: Mask, want: int) -> tuple[list[int], list[float]]:
        """Exact scores over the allowed rows: the fallback when an ANN index comes back short."""
        candidates = np.flatnonzero(mask)
        scores = self._embeddings[candidates] @ query
        if want < len(candidates):
            top = np.argpartition(-scores, want - 1)[:want]
            candidates, scores = candidates[top], scores[top]
        order = np.argsort(-scores, kind="stable")
        return candidates[order].tolist(), scores[order].tolist()

    def item_vector(self, row: int) -> Vector:
        vector: Vector = self._embeddings[row]
        return vector
