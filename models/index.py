"""FAISS index over item embeddings: exact for small catalogs, approximate above a threshold,
with its recall@k against exact search measured so the manifest states what the service gets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np

from models.types import FloatArray

IndexType = Literal["flat_ip", "hnsw", "ivf"]
EXACT_THRESHOLD = 100_000


@dataclass(frozen=True)
class IndexSpec:
    """How to index: `kind=None` picks flat_ip up to `exact_threshold` items, else `large`."""

    kind: IndexType | None = None
    large: IndexType = "hnsw"
    exact_threshold: int = EXACT_THRESHOLD
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    hnsw_ef_search: int = 128
    ivf_nlist: int = 0  # 0 = 4 * sqrt(n)
    ivf_nprobe: int = 32
    threads: int = 2


@dataclass
class BuiltIndex:
    index: Any  # faiss.Index
    kind: IndexType
    params: dict[str, int] = field(default_factory=dict)
    recall_at_100: float = 1.0


def build_index(embeddings: FloatArray, spec: IndexSpec | None = None) -> BuiltIndex:
    """Index `embeddings` (rows L2-normalised) for inner-product search; FAISS id == row."""
    spec = spec or IndexSpec()
    faiss.omp_set_num_threads(spec.threads)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = vectors.shape
    kind = spec.kind or ("flat_ip" if n <= spec.exact_threshold else spec.large)
    if kind == "flat_ip":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return BuiltIndex(index, "flat_ip", {})
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
        index.hnsw.efSearch = spec.hnsw_ef_search
        index.add(vectors)
        params = {
            "M": spec.hnsw_m,
            "efConstruction": spec.hnsw_ef_construction,
            "efSearch": spec.hnsw_ef_search,
        }
        return BuiltIndex(index, "hnsw", params)
    nlist = spec.ivf_nlist or max(1, min(n // 39, int(4 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(n, size=min(n, nlist * 64), replace=False)]
    index.train(sample)
    index.add(vectors)
    index.nprobe = min(spec.ivf_nprobe, nlist)
    return BuiltIndex(index, "ivf", {"nlist": nlist, "nprobe": int(index.nprobe)})


def recall_at_k(built: BuiltIndex, embeddings: FloatArray, queries: FloatArray, k: int) -> float:
    """Mean fraction of the exact top-k (brute force) that the index returns."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(q, k)
    _, found = built.index.search(q, k)
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found, strict=True))
    return hits / (len(q) * k)


def query_sample(
    embeddings: FloatArray, extra: FloatArray | None = None, *, count: int = 1000, seed: int = 0
) -> FloatArray:
    """At least `count` queries: the given ones (e.g. user embeddings) topped up with perturbed
    item embeddings, so the recall figure never rests on a handful of queries."""
    rng = np.random.default_rng(seed)
    parts = [] if extra is None else [np.asarray(extra, dtype=np.float32)]
    missing = count - sum(len(p) for p in parts)
    if missing > 0:
        base = embeddings[rng.integers(0, len(embeddings), size=missing)]
        noisy = base + rng.normal(0, 0.3 / math.sqrt(embeddings.shape[1]), size=base.shape)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        parts.append(noisy.astype(np.float32))
    return np.concatenate(parts).astype(np.float32)
