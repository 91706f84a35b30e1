"""The large-catalog index figure: synth clustered unit vectors, build the ANN index the export
would build above the exact threshold, time it and measure recall@100 against exact search."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from models.index import IndexSpec, IndexType, build_index
from models.types import FloatArray


def clustered_embeddings(
    items: int, dim: int, *, clusters: int = 2000, spread: float = 0.6, seed: int = 0
) -> FloatArray:
    """Unit vectors around `clusters` random centres with Zipf-sized clusters, like item-tower
    outputs (genre/taste clusters of very different sizes)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    sizes = 1.0 / np.arange(1, clusters + 1) ** 0.8
    owner = rng.choice(clusters, size=items, p=sizes / sizes.sum())
    out = np.empty((items, dim), dtype=np.float32)
    chunk = 100_000
    for start in range(0, items, chunk):
        rows = owner[start : start + chunk]
        noise = rng.standard_normal((len(rows), dim)).astype(np.float32)
        out[start : start + chunk] = centres[rows] + spread * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def run(
    *, items: int, dim: int, queries: int = 1000, kind: IndexType = "ivf", seed: int = 0
) -> dict[str, Any]:
    started = time.perf_counter()
    embeddings = clustered_embeddings(items, dim, seed=seed)
    synth_seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed + 1)
    probe = embeddings[rng.integers(0, items, size=queries)]
    probe = probe + rng.normal(0, 0.5 / np.sqrt(dim), size=probe.shape).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)

    built_at = time.perf_counter()
    built = build_index(embeddings, probe.astype(np.float32), IndexSpec(kind=kind))
    build_seconds = time.perf_counter() - built_at
    search_started = time.perf_counter()
    built.index.search(probe.astype(np.float32), 100)
    search_seconds = time.perf_counter() - search_started
    return {
        "items": items,
        "dim": dim,
        "index": built.kind,
        "params": built.params,
        "synth_seconds": round(synth_seconds, 1),
        "build_seconds": round(build_seconds, 1),
        "synth_plus_build_seconds": round(synth_seconds + build_seconds, 1),
        "recall_at_100": round(built.recall_at_100, 4),
        "queries": queries,
        "search_ms_per_query": round(1000 * search_seconds / queries, 3),
    }
