"""Retriever: `k` results whenever `k` rows qualify, exact for flat, complete for ANN indexes."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from service.catalog.filters import Allowed, pack
from service.catalog.retriever import PLAIN_MAX_EXCLUDED, Retriever, SearchSettings

N, DIM = 600, 8


@pytest.fixture(scope="module")
def embeddings() -> npt.NDArray[np.float32]:
    vectors = np.random.default_rng(0).normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _index(kind: str, embeddings: npt.NDArray[np.float32]) -> Any:
    if kind == "flat_ip":
        index = faiss.IndexFlatIP(DIM)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 16
    elif kind == "ivfsq":  # what models build writes above the exact threshold: 8-bit codes
        index = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(DIM),
            DIM,
            16,
            faiss.ScalarQuantizer.QT_8bit,
            faiss.METRIC_INNER_PRODUCT,
        )
        index.train(embeddings)
        index.nprobe = 1
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = 1
    index.add(embeddings)
    return index


def _served(kind: str) -> str:
    return "ivf" if kind == "ivfsq" else kind


@pytest.fixture(
    params=["flat_ip", "hnsw", "ivf", "ivfsq", "hnsw-bitmap", "ivf-bitmap", "ivfsq-bitmap"]
)
def retriever(request: pytest.FixtureRequest, embeddings: npt.NDArray[np.float32]) -> Retriever:
    """`-bitmap`: no filter is small enough for the exact plan, so the index's selector runs."""
    kind, _, plan = request.param.partition("-")
    exact_max_rows = 0 if plan == "bitmap" else 20_000
    index = _index(kind, embeddings)
    return Retriever(index, embeddings, _served(kind), exact_max_rows=exact_max_rows)


@pytest.mark.parametrize("filtered", [False, True])
def test_compressed_codes_are_scored_again_exactly(
    embeddings: npt.NDArray[np.float32], filtered: bool
) -> None:
    """8-bit codes score approximately: what comes back carries the exact inner products,
    best first, so a page's order and its scores never depend on the quantisation."""
    index = _index("ivfsq", embeddings)
    index.nprobe = 16  # every list: the candidates are the exact top rows
    retriever = Retriever(index, embeddings, "ivf", exact_max_rows=0)
    query = embeddings[3]
    allowed = _allowed(np.arange(N) % 2 == 0) if filtered else None
    rows, scores = retriever.search(query, 10, allowed=allowed)
    assert np.allclose(scores, embeddings[rows] @ query, atol=1e-6)
    assert scores == sorted(scores, reverse=True)
    qualifying = set(range(0, N, 2)) if filtered else set(range(N))
    assert rows[:5] == _exact(embeddings, query, qualifying, 5)


def _allowed(mask: npt.NDArray[np.bool_]) -> Allowed:
    return Allowed.of(pack(mask), len(mask))


def _exact(
    embeddings: npt.NDArray[np.float32], query: npt.NDArray[np.float32], allowed: set[int], k: int
) -> list[int]:
    scores = embeddings @ query
    return sorted(allowed, key=lambda r: -scores[r])[:k]


def test_plain_search_excludes_and_fills_the_page(
    retriever: Retriever, embeddings: npt.NDArray[np.float32]
) -> None:
    query = embeddings[0]
    top = _exact(embeddings, query, set(range(N)), 30)
    excluded = set(top[:20])
    rows, scores = retriever.search(query, 10, excluded=excluded)
    assert len(rows) == 10
    assert not excluded & set(rows)
    assert scores == sorted(scores, reverse=True)
    if retriever.exact:
        assert rows == top[20:30]


def test_a_restrictive_filter_still_returns_every_qualifying_row(
    retriever: Retriever, embeddings: npt.NDArray[np.float32]
) -> None:
    allowed = np.zeros(N, dtype=np.bool_)
    allowed[[5, 77, 300, 301, 599]] = True
    rows, _ = retriever.search(embeddings[1], 10, excluded={300}, allowed=_allowed(allowed))
    assert sorted(rows) == [5, 77, 301, 599]


def test_filtered_search_is_exact_on_the_allowed_rows(
    retriever: Retriever, embeddings: npt.NDArray[np.float32]
) -> None:
    allowed = np.zeros(N, dtype=np.bool_)
    allowed[::3] = True
    query = embeddings[2]
    rows, _ = retriever.search(query, 12, excluded={0, 3}, allowed=_allowed(allowed))
    expected = _exact(embeddings, query, set(np.flatnonzero(allowed).tolist()) - {0, 3}, 12)
    assert len(rows) == 12
    assert set(rows) <= set(np.flatnonzero(allowed).tolist()) - {0, 3}
    if retriever.exact:
        assert rows == expected


def test_many_exclusions_use_the_selector_path(
    retriever: Retriever, embeddings: npt.NDArray[np.float32]
) -> None:
    excluded = set(range(0, N - 5))
    rows, _ = retriever.search(embeddings[3], 10, excluded=excluded)
    assert sorted(rows) == list(range(N - 5, N))


@pytest.mark.parametrize("excluded", [set(), {7}, set(range(0, N, 2))])
def test_an_exact_index_ranks_the_whole_catalog_by_inner_product(
    embeddings: npt.NDArray[np.float32], excluded: set[int]
) -> None:
    """The flat plan (one matmul, excluded rows at -inf): k up to every remaining row, exact
    scores best first, never an excluded row, whatever k asks past what remains."""
    retriever = Retriever(_index("flat_ip", embeddings), embeddings, "flat_ip")
    query = embeddings[11]
    remaining = set(range(N)) - excluded
    for k in (1, 10, len(remaining), N + 5):
        rows, scores = retriever.search(query, k, excluded=excluded)
        assert rows == _exact(embeddings, query, remaining, k)
        assert np.allclose(scores, embeddings[rows] @ query, atol=1e-6)


def test_nothing_qualifies(retriever: Retriever, embeddings: npt.NDArray[np.float32]) -> None:
    assert retriever.search(embeddings[4], 5, excluded=set(range(N))) == ([], [])
    assert retriever.search(embeddings[4], 5, allowed=_allowed(np.zeros(N, dtype=np.bool_))) == (
        [],
        [],
    )


def test_arm_search_settings_are_applied(embeddings: npt.NDArray[np.float32]) -> None:
    retriever = Retriever(_index("hnsw", embeddings), embeddings, "hnsw")
    wide = SearchSettings(overfetch=4.0, ef_search=256)
    rows, _ = retriever.search(embeddings[5], 10, settings=wide)
    assert rows == _exact(embeddings, embeddings[5], set(range(N)), 10)


def test_arms_sharing_a_retriever_keep_their_own_settings(
    embeddings: npt.NDArray[np.float32],
) -> None:
    """The plain search's parameters are built once per setting and reused: two arms over one
    index, interleaved, each get what their own setting gives on a fresh retriever."""
    index = _index("ivf", embeddings)
    shared = Retriever(index, embeddings, "ivf")
    every_list = SearchSettings(nprobe=16)
    differ = 0
    for query in embeddings[:20]:
        narrow, _ = shared.search(query, 10)
        wide, _ = shared.search(query, 10, settings=every_list)
        assert narrow == Retriever(index, embeddings, "ivf").search(query, 10)[0]
        assert wide == _exact(embeddings, query, set(range(N)), 10)
        differ += narrow != wide
    assert differ > 0  # one list of 16 misses some of the exact answer


def test_a_long_exclusion_list_with_a_filter_still_fills_the_page(
    retriever: Retriever, embeddings: npt.NDArray[np.float32]
) -> None:
    allowed = np.zeros(N, dtype=np.bool_)
    allowed[: N // 2] = True
    excluded = set(range(0, N // 2 - 7)) | set(range(N // 2, N))
    assert len(excluded) > PLAIN_MAX_EXCLUDED
    rows, _ = retriever.search(embeddings[6], 10, excluded=excluded, allowed=_allowed(allowed))
    assert sorted(rows) == list(range(N // 2 - 7, N // 2))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_the_exact_plan_serves_selective_filters_exactly(
    kind: str, embeddings: npt.NDArray[np.float32]
) -> None:
    """Below the cutoff an ANN index is not asked at all: the answer is the exact one."""
    retriever = Retriever(_index(kind, embeddings), embeddings, kind, exact_max_rows=N // 10)
    allowed = np.zeros(N, dtype=np.bool_)
    allowed[::12] = True
    query = embeddings[7]
    rows, scores = retriever.search(query, 10, excluded={12}, allowed=_allowed(allowed))
    expected = _exact(embeddings, query, set(np.flatnonzero(allowed).tolist()) - {12}, 10)
    assert rows == expected
    assert np.allclose(scores, embeddings[rows] @ query, atol=1e-5)


@pytest.mark.parametrize("many", [False, True])
def test_the_exact_plan_drops_excluded_top_rows_and_still_fills_k(many: bool) -> None:
    """Few exclusions are over-fetched and dropped, many are removed first: the same answer."""
    size = 3_000
    vectors = np.random.default_rng(1).normal(size=(size, DIM)).astype(np.float32)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    retriever = Retriever(index, vectors, "flat_ip", exact_max_rows=size // 2)
    allowed = np.zeros(size, dtype=np.bool_)
    allowed[::5] = True  # 600 rows: scanned by row (under a quarter of the catalog)
    query = vectors[9]
    qualifying = set(np.flatnonzero(allowed).tolist())
    top = _exact(vectors, query, qualifying, 15)
    excluded = set(top[:5])
    if many:  # past PLAIN_MAX_EXCLUDED allowed rows, none of them in the expected answer
        excluded |= set(_exact(vectors, query, qualifying, 600)[15 : 16 + PLAIN_MAX_EXCLUDED])
    assert (len(excluded) > PLAIN_MAX_EXCLUDED) == many
    rows, scores = retriever.search(query, 10, excluded=excluded, allowed=_allowed(allowed))
    assert rows == top[5:15]
    assert np.allclose(scores, vectors[rows] @ query, atol=1e-5)


def test_a_broad_filter_over_ann_keeps_most_of_the_exact_answer(
    embeddings: npt.NDArray[np.float32],
) -> None:
    retriever = Retriever(_index("hnsw", embeddings), embeddings, "hnsw", exact_max_rows=0)
    allowed = np.zeros(N, dtype=np.bool_)
    allowed[::2] = True
    qualifying = set(np.flatnonzero(allowed).tolist())
    recalls = []
    for q in range(20):
        rows, _ = retriever.search(embeddings[q], 10, allowed=_allowed(allowed))
        assert len(rows) == 10 and set(rows) <= qualifying
        recalls.append(len(set(rows) & set(_exact(embeddings, embeddings[q], qualifying, 10))))
    assert np.mean(recalls) >= 9.0
