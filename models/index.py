"""FAISS index over item embeddings: exact for small catalogs, approximate above a threshold,
with its recall@k against exact search measured so the manifest states what the service gets."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np
from tqdm import tqdm

from models.types import FloatArray, IntArray

IndexType = Literal["flat_ip", "hnsw", "ivf"]
EXACT_THRESHOLD = 100_000


@dataclass(frozen=True)
class IndexSpec:
    """How to index: `kind=None` picks flat_ip up to `exact_threshold` items, else `large`.

    The approximate index's search knob (efSearch / nprobe) is raised step by step until the
    measured recall@100 reaches `target_recall`, so the manifest's figure is what serving gets.
    """

    kind: IndexType | None = None
    large: IndexType = "ivf"
    exact_threshold: int = EXACT_THRESHOLD
    target_recall: float = 0.95
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    ivf_nlist: int = 0  # 0 = 2 * sqrt(n)
    ivf_train_per_list: int = 40
    threads: int = 2


SEARCH_STEPS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass
class BuiltIndex:
    index: Any  # faiss.Index
    kind: IndexType
    params: dict[str, int] = field(default_factory=dict)
    recall_at_100: float = 1.0
    recall_at_10: float = 1.0
    latency_ms: float = 0.0  # mean per query, one thread, at the tuned knob


def exact_top_k(embeddings: FloatArray, queries: FloatArray, k: int) -> IntArray:
    exact = faiss.IndexFlatIP(embeddings.shape[1])
    exact.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.asarray(truth, dtype=np.int64)


def recall_against(index: Any, queries: FloatArray, truth: IntArray) -> float:
    """Mean fraction of the exact top-k (`truth`) that `index` returns."""
    k = int(truth.shape[1])
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits: int = sum(
        len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found, strict=True)
    )
    return float(hits) / float(len(truth) * k)


def build_index(
    embeddings: FloatArray,
    queries: FloatArray,
    spec: IndexSpec | None = None,
    *,
    k: int = 100,
    progress: bool = False,
) -> BuiltIndex:
    """Index `embeddings` (rows L2-normalised) for inner-product search; FAISS id == row.

    `queries` measure recall@k against exact search (and tune the approximate index)."""
    spec = spec or IndexSpec()
    faiss.omp_set_num_threads(spec.threads)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = vectors.shape
    k = min(k, n)
    kind = spec.kind or ("flat_ip" if n <= spec.exact_threshold else spec.large)
    index: Any
    if kind == "flat_ip":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        truth = exact_top_k(vectors, queries, k)
        return _measured(index, "flat_ip", {}, queries, truth)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
        _add(index, vectors, progress)
        params = {"M": spec.hnsw_m, "efConstruction": spec.hnsw_ef_construction}
        knob = "efSearch"

        def set_knob(value: int) -> None:
            index.hnsw.efSearch = max(value, k)
    else:
        nlist = spec.ivf_nlist or max(1, min(n // spec.ivf_train_per_list, int(2 * math.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        size = min(n, nlist * spec.ivf_train_per_list)
        index.train(vectors[np.sort(rng.choice(n, size=size, replace=False))])
        _add(index, vectors, progress)
        params = {"nlist": nlist}
        knob = "nprobe"

        def set_knob(value: int) -> None:
            index.nprobe = min(value, nlist)

    truth = exact_top_k(vectors, queries, k)
    recall = 0.0
    for value in tqdm(SEARCH_STEPS, desc=f"tune {knob}", leave=False, disable=not progress):
        set_knob(value)
        recall = recall_against(index, queries, truth)
        if recall >= spec.target_recall:
            break
    effective = int(index.hnsw.efSearch) if kind == "hnsw" else int(index.nprobe)
    return _measured(index, kind, {**params, knob: effective}, queries, truth)


def _add(index: Any, vectors: FloatArray, progress: bool, chunk: int = 100_000) -> None:
    starts = range(0, len(vectors), chunk)
    for start in tqdm(starts, desc="index add", leave=False, disable=not progress):
        index.add(vectors[start : start + chunk])


def _measured(
    index: Any, kind: IndexType, params: dict[str, int], queries: FloatArray, truth: IntArray
) -> BuiltIndex:
    """Recall@100 and @10 against exact search, and the one-query-at-a-time latency that a
    request sees (a single thread; batched search would hide it)."""
    recall = recall_against(index, queries, truth)
    top10 = recall_against(index, queries, truth[:, : min(10, truth.shape[1])])
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    sample = np.ascontiguousarray(queries[:200], dtype=np.float32)
    started = time.perf_counter()
    for row in sample:
        index.search(row[None, :], int(truth.shape[1]))
    latency = (time.perf_counter() - started) * 1000 / max(len(sample), 1)
    faiss.omp_set_num_threads(threads)
    return BuiltIndex(index, kind, params, recall, top10, latency)


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
