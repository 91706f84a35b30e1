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
IvfCodes = Literal["flat", "sq8"]
EXACT_THRESHOLD = 100_000


@dataclass(frozen=True)
class IndexSpec:
    """How to index: `kind=None` picks flat_ip up to `exact_threshold` items, else `large`.

    The approximate index's search knob (efSearch / nprobe) is raised step by step until the
    measured recall@100 reaches `target_recall`, so the manifest's figure is what serving gets.

    IVF defaults, measured on the 1M synth bundle's real user-tower queries (docs/scale.md):
    8·√n lists instead of 2·√n scan 4x fewer vectors for the same recall, and 8-bit codes
    (4x smaller lists, scored exactly again by the service) cost another 1.6x less per query.
    """

    kind: IndexType | None = None
    large: IndexType = "ivf"
    exact_threshold: int = EXACT_THRESHOLD
    target_recall: float = 0.95
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    ivf_nlist: int = 0  # 0 = ivf_lists_per_root * sqrt(n)
    ivf_lists_per_root: float = 8.0
    ivf_train_per_list: int = 40
    ivf_codes: IvfCodes = "sq8"
    threads: int = 2


SEARCH_STEPS = (16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 512, 768, 1024)


@dataclass
class BuiltIndex:
    index: Any  # faiss.Index
    kind: IndexType
    params: dict[str, int | str] = field(default_factory=dict)
    recall_at_100: float = 1.0
    recall_at_10: float = 1.0
    latency_ms: float = 0.0  # mean per query, one thread, at the tuned knob
    queries: dict[str, int] = field(default_factory=dict)  # how many tuned on / measured on


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

    `queries` (shuffled, e.g. by `query_sample`) are split in two: the first half tunes the
    approximate index, the second, held-out half measures the recall@k against exact search
    that the manifest reports, so the figure is not the one the tuning stopped on."""
    spec = spec or IndexSpec()
    faiss.omp_set_num_threads(spec.threads)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = vectors.shape
    k = min(k, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    half = len(queries) // 2
    tune, held = (queries[:half], queries[half:]) if half else (queries, queries)
    kind = spec.kind or ("flat_ip" if n <= spec.exact_threshold else spec.large)
    index: Any
    if kind == "flat_ip":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return _measured(index, "flat_ip", {}, held, exact_top_k(vectors, held, k), tuned_on=0)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
        _add(index, vectors, progress)
        params: dict[str, int | str] = {
            "M": spec.hnsw_m,
            "efConstruction": spec.hnsw_ef_construction,
        }
        knob = "efSearch"

        def set_knob(value: int) -> None:
            index.hnsw.efSearch = max(value, k)
    else:
        lists = int(spec.ivf_lists_per_root * math.sqrt(n))
        nlist = spec.ivf_nlist or max(1, min(n // spec.ivf_train_per_list, lists))
        index = _ivf(dim, nlist, spec.ivf_codes)
        rng = np.random.default_rng(0)
        size = min(n, nlist * spec.ivf_train_per_list)
        index.train(vectors[np.sort(rng.choice(n, size=size, replace=False))])
        _add(index, vectors, progress)
        params = {"nlist": nlist, "codes": spec.ivf_codes}
        knob = "nprobe"

        def set_knob(value: int) -> None:
            index.nprobe = min(value, nlist)

    truth = exact_top_k(vectors, np.concatenate([tune, held]), k)
    tune_truth, held_truth = truth[: len(tune)], truth[len(tune) :]
    recall = 0.0
    for value in tqdm(SEARCH_STEPS, desc=f"tune {knob}", leave=False, disable=not progress):
        set_knob(value)
        recall = recall_against(index, tune, tune_truth)
        if recall >= spec.target_recall:
            break
    effective = int(index.hnsw.efSearch) if kind == "hnsw" else int(index.nprobe)
    params = {**params, knob: effective}
    return _measured(index, kind, params, held, held_truth, tuned_on=len(tune))


def _ivf(dim: int, nlist: int, codes: IvfCodes) -> Any:
    quantizer = faiss.IndexFlatIP(dim)
    if codes == "flat":
        return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )


def _add(index: Any, vectors: FloatArray, progress: bool, chunk: int = 100_000) -> None:
    starts = range(0, len(vectors), chunk)
    for start in tqdm(starts, desc="index add", leave=False, disable=not progress):
        index.add(vectors[start : start + chunk])


def _measured(
    index: Any,
    kind: IndexType,
    params: dict[str, int | str],
    queries: FloatArray,
    truth: IntArray,
    *,
    tuned_on: int,
) -> BuiltIndex:
    """Recall@100 and @10 against exact search on held-out queries, and the one-query-at-a-time
    latency that a request sees (a single thread; batched search would hide it)."""
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
    counts = {"tuned_on": tuned_on, "measured_on": len(queries)}
    return BuiltIndex(index, kind, params, recall, top10, latency, counts)


def query_sample(
    embeddings: FloatArray, extra: FloatArray | None = None, *, count: int = 1000, seed: int = 0
) -> FloatArray:
    """`count` queries: a seeded sample of the given ones (real user-tower embeddings), topped
    up with perturbed item embeddings only when there are too few users, so the recall figure
    never rests on a handful of queries. Sampled, not all: exact top-100 for 20k users over a
    million items alone took minutes of a build."""
    rng = np.random.default_rng(seed)
    parts = []
    if extra is not None and len(extra):
        given = np.asarray(extra, dtype=np.float32)
        if len(given) > count:
            given = given[np.sort(rng.choice(len(given), size=count, replace=False))]
        parts.append(given[rng.permutation(len(given))])
    missing = count - sum(len(p) for p in parts)
    if missing > 0:
        base = embeddings[rng.integers(0, len(embeddings), size=missing)]
        noisy = base + rng.normal(0, 0.3 / math.sqrt(embeddings.shape[1]), size=base.shape)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        parts.append(noisy.astype(np.float32))
    return np.concatenate(parts).astype(np.float32)
