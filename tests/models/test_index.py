from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from models.bench_index import clustered_embeddings, run
from models.index import IndexSpec, build_index, exact_top_k, query_sample, recall_against


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_embeddings(5000, 16, clusters=50, seed=1)


def test_clustered_embeddings_are_unit_vectors(vectors: np.ndarray) -> None:
    assert vectors.shape == (5000, 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_small_catalogs_get_exact_search(vectors: np.ndarray) -> None:
    queries = query_sample(vectors, count=200)
    built = build_index(vectors, queries)
    assert built.kind == "flat_ip" and built.params == {}
    assert built.recall_at_100 == 1.0


@pytest.mark.parametrize(("kind", "knob"), [("ivf", "nprobe"), ("hnsw", "efSearch")])
def test_approximate_indexes_are_tuned_to_the_target_recall(
    vectors: np.ndarray, kind: str, knob: str
) -> None:
    queries = query_sample(vectors, count=300, seed=2)
    spec = IndexSpec(exact_threshold=1000, large=kind, target_recall=0.95)  # type: ignore[arg-type]
    built = build_index(vectors, queries, spec)
    assert built.kind == kind and knob in built.params
    assert built.recall_at_100 >= 0.95
    assert built.queries == {"tuned_on": 150, "measured_on": 150}
    held = queries[150:]  # the reported figure is measured on queries the tuning never saw
    truth = exact_top_k(vectors, held, 100)
    assert recall_against(built.index, held, truth) == pytest.approx(built.recall_at_100)
    assert built.index.ntotal == len(vectors)


def test_recall_against_counts_overlap() -> None:
    vectors = np.eye(4, dtype=np.float32)
    queries = np.array([[1.0, 0.5, 0.0, 0.0]], dtype=np.float32)
    truth = exact_top_k(vectors, queries, 2)
    assert truth.tolist() == [[0, 1]]
    built = build_index(vectors, queries)
    assert recall_against(built.index, queries, np.array([[0, 3]])) == 0.5


def test_query_sample_tops_up_given_queries(vectors: np.ndarray) -> None:
    given = vectors[:10]
    queries = query_sample(vectors, given, count=50)
    assert queries.shape == (50, 16)
    assert sorted(map(tuple, queries[:10].tolist())) == sorted(map(tuple, given.tolist()))
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)


def test_query_sample_samples_many_users_without_topping_up(vectors: np.ndarray) -> None:
    users = vectors[:400]
    queries = query_sample(vectors, users, count=100, seed=3)
    assert queries.shape == (100, 16)
    known = {tuple(row) for row in users.tolist()}
    assert all(tuple(row) in known for row in queries.tolist())
    assert len({tuple(row) for row in queries.tolist()}) == 100


def test_bench_reports_build_time_and_recall() -> None:
    figures = run(items=3000, dim=16, queries=100, kind="ivf")
    assert figures["items"] == 3000 and figures["index"] == "ivf"
    assert figures["recall_at_100"] >= 0.95
    assert figures["build_seconds"] >= 0 and figures["search_ms_per_query"] > 0


@pytest.mark.parametrize("kind", ["flat_ip", "ivf", "hnsw"])
def test_written_index_reads_memory_mapped_with_the_same_results(
    vectors: np.ndarray, kind: str, tmp_path: Path
) -> None:
    """The service opens items.faiss with IO_FLAG_MMAP_IFC; every type we write must load that
    way and answer exactly as the index that was built."""
    queries = query_sample(vectors, count=100)
    built = build_index(vectors, queries, IndexSpec(kind=kind))  # type: ignore[arg-type]
    path = tmp_path / "items.faiss"
    faiss.write_index(built.index, str(path))
    mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    for knob, value in built.params.items():
        if knob == "nprobe":
            mapped.nprobe = value
        elif knob == "efSearch":
            mapped.hnsw.efSearch = value
    want = built.index.search(queries, 100)
    got = mapped.search(queries, 100)
    assert np.array_equal(want[1], got[1]) and np.allclose(want[0], got[0])


def test_built_index_reports_recall_at_10_and_latency(vectors: np.ndarray) -> None:
    queries = query_sample(vectors, count=200)
    built = build_index(vectors, queries, IndexSpec(kind="ivf"))
    assert 0.0 < built.recall_at_10 <= 1.0 and built.recall_at_100 >= 0.95
    assert built.latency_ms > 0.0
