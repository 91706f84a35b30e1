"""The live delta on the real tiny bundle: tombstones, filters, exact-k merge, embedder parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.features import title_tokens as models_title_tokens
from service.catalog.bundle import Bundle, load_bundle
from service.catalog.filters import ItemFilter
from service.catalog.item_embedder import ItemEmbedder, title_tokens
from service.catalog.live import LiveDelta, LiveItem, merge, search_with_delta


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="module")
def embedder(bundle: Bundle) -> ItemEmbedder:
    return ItemEmbedder.for_bundle(bundle)


def _bundle_item(bundle: Bundle, row: int) -> LiveItem:
    c = bundle.catalog
    year = int(c.years[row])
    return LiveItem(c.item_ids[row], c.titles[row], tuple(c.genres[row]), year or None)


def _search(bundle: Bundle, delta: LiveDelta, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    return search_with_delta(bundle.retriever, bundle.catalog.item_ids, delta, query, k)


def test_embedder_matches_the_bundle_tower_and_models_features(
    bundle: Bundle, embedder: ItemEmbedder
) -> None:
    rows = [0, 1, 7, 42, 399]
    items = [_bundle_item(bundle, r) for r in rows]
    for item in items:
        spec = bundle.manifest.item_tower
        assert title_tokens(item.title, spec.title_hash_buckets, spec.title_max_tokens) == (
            models_title_tokens(
                item.title, buckets=spec.title_hash_buckets, max_tokens=spec.title_max_tokens
            )
        )
    got = embedder.embed(items, item_idx=rows)
    want = np.load(bundle.path / "item_embeddings.npy")[rows]
    assert np.abs(got - want).max() < 1e-5
    cold = embedder.embed(items)  # content only: unit vectors, not the id-trained ones
    assert np.allclose(np.linalg.norm(cold, axis=1), 1.0, atol=1e-5)


def test_unknown_genres_are_reported_not_fatal(embedder: ItemEmbedder) -> None:
    item = LiveItem("new-1", "Brand New Film (2031)", ("NoSuchGenre",), 2031)
    assert embedder.unknown_genres(item) == ["NoSuchGenre"]
    assert embedder.embed([item]).shape[0] == 1


def test_upsert_is_retrievable_and_update_never_returns_twice(bundle: Bundle) -> None:
    delta = LiveDelta(bundle.catalog.rows, bundle.manifest.embedding_dim)
    query = bundle.retriever.item_vector(5).copy()
    before = _search(bundle, delta, query, 10)
    top_id = before[0][0]
    delta.upsert(LiveItem(top_id, "Updated", ("Drama",)), query)
    after = _search(bundle, delta, query, 10)
    ids = [i for i, _ in after]
    assert len(after) == 10 and ids.count(top_id) == 1
    assert bundle.catalog.rows[top_id] in delta.tombstoned_rows()
    delta.upsert(LiveItem("brand-new", "Brand New", ("Drama",), 2030), query)
    assert "brand-new" in [i for i, _ in _search(bundle, delta, query, 10)]


def test_delete_and_hide_remove_from_results_exactly_k_remain(bundle: Bundle) -> None:
    delta = LiveDelta(bundle.catalog.rows, bundle.manifest.embedding_dim)
    query = bundle.retriever.item_vector(3).copy()
    first = [i for i, _ in _search(bundle, delta, query, 10)]
    delta.delete(first[0])
    delta.set_available(first[1], False)
    delta.upsert(LiveItem("live-hidden", "Hidden", ()), query)
    delta.set_available("live-hidden", False)
    page = [i for i, _ in _search(bundle, delta, query, 10)]
    assert len(page) == 10
    assert not {first[0], first[1], "live-hidden"} & set(page)
    delta.set_available(first[1], True)
    assert first[1] in [i for i, _ in _search(bundle, delta, query, 10)]


def test_live_items_obey_filters_and_exclusions(bundle: Bundle) -> None:
    delta = LiveDelta(bundle.catalog.rows, 4)
    q = np.array([1, 0, 0, 0], dtype=np.float32)
    delta.upsert(LiveItem("a", "A", ("Drama",), 1999), np.array([0.9, 0.1, 0, 0]))
    delta.upsert(LiveItem("b", "B", ("Comedy",), 2005), np.array([0.8, 0.2, 0, 0]))
    delta.upsert(LiveItem("c", "C", ("Comedy",), None), np.array([0.7, 0.3, 0, 0]))
    assert [i for i, _ in delta.search_delta(q, 5)] == ["a", "b", "c"]
    comedy = ItemFilter(genres_any=frozenset({"Comedy"}))
    assert [i for i, _ in delta.search_delta(q, 5, comedy)] == ["b", "c"]
    assert [i for i, _ in delta.search_delta(q, 5, ItemFilter(year_min=2000))] == ["b"]
    assert [i for i, _ in delta.search_delta(q, 5, excluded_ids={"a"})] == ["b", "c"]
    delta.delete("b")
    assert [i for i, _ in delta.search_delta(q, 1)] == ["a"]
    assert len(delta) == 2


def test_merge_is_by_score_and_exactly_k() -> None:
    bundle = [("x", 0.9), ("y", 0.5), ("z", 0.1)]
    live = [("l1", 0.7), ("l2", 0.2)]
    assert merge(bundle, live, 4) == [("x", 0.9), ("l1", 0.7), ("y", 0.5), ("l2", 0.2)]
    assert len(merge(bundle, live, 10)) == 5


def test_delta_grows_past_one_chunk(bundle: Bundle) -> None:
    dim = bundle.manifest.embedding_dim
    delta = LiveDelta(bundle.catalog.rows, dim)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2_500, dim)).astype(np.float32)
    for n, v in enumerate(vectors):
        delta.upsert(LiveItem(f"n{n}", "t", ()), v)
    best = int(np.argmax(vectors @ vectors[1_777]))
    assert delta.search_delta(vectors[1_777], 1)[0][0] == f"n{best}"


def test_filtered_search_with_delta_keeps_exactly_k_and_the_filter(bundle: Bundle) -> None:
    catalog = bundle.catalog
    genre = catalog.genres[0][0]
    item_filter = ItemFilter(genres_any=frozenset({genre}))
    allowed = catalog.masks.allowed(item_filter)
    assert allowed is not None
    delta = LiveDelta(catalog.rows, bundle.manifest.embedding_dim)
    query = bundle.retriever.item_vector(0).copy()
    delta.upsert(LiveItem("match", "M", (genre,)), query)
    delta.upsert(LiveItem("other", "O", ("NoSuchGenre",)), query)
    delta.delete(catalog.item_ids[0])
    k = min(10, allowed.count)
    page = search_with_delta(
        bundle.retriever, catalog.item_ids, delta, query, k, allowed=allowed,
        item_filter=item_filter,
    )  # fmt: skip
    ids = [i for i, _ in page]
    assert len(page) == k and ids[0] == "match" and "other" not in ids
    assert catalog.item_ids[0] not in ids
    assert all(genre in catalog.genres[catalog.rows[i]] for i in ids if i != "match")


def _passes(item: LiveItem, f: ItemFilter) -> bool:
    """The bundle's filter semantics for one item, written plainly: the oracle."""
    genres, year = set(item.genres), item.year or 0
    return (
        (not f.genres_any or bool(genres & f.genres_any))
        and not genres & f.genres_none
        and (f.year_min is None or (year > 0 and year >= f.year_min))
        and (f.year_max is None or (0 < year <= f.year_max))
    )


def test_vectorised_filters_equal_the_per_item_semantics_through_churn() -> None:
    """Random upserts (re-genred updates too), deletes and hides, then random filters: the
    delta's top-k is exactly the brute-force answer over the items that pass."""
    rng = np.random.default_rng(7)
    vocab = ["Action", "Drama", "Comedy", "Noir", "Sci-Fi"]
    dim = 8
    delta = LiveDelta({}, dim)
    alive: dict[str, tuple[LiveItem, np.ndarray]] = {}
    hidden: set[str] = set()
    for step in range(3_000):
        item_id = f"i{rng.integers(1_500)}"
        op = rng.random()
        if op < 0.7:
            genres = tuple(rng.choice(vocab, size=rng.integers(0, 3), replace=False).tolist())
            year = None if rng.random() < 0.1 else int(rng.integers(1950, 2030))
            item = LiveItem(item_id, f"t{step}", genres, year)
            vector = rng.standard_normal(dim).astype(np.float32)
            delta.upsert(item, vector)
            alive[item_id] = (item, vector)
        elif op < 0.85:
            delta.delete(item_id)
            alive.pop(item_id, None)
            hidden.discard(item_id)
        else:
            available = bool(rng.random() < 0.5)
            delta.set_available(item_id, available)
            (hidden.discard if available else hidden.add)(item_id)
    assert len(delta) == len(alive)
    for _ in range(200):
        f = ItemFilter(
            genres_any=frozenset(rng.choice(vocab, size=rng.integers(0, 3), replace=False)),
            genres_none=frozenset(rng.choice(vocab, size=rng.integers(0, 2), replace=False)),
            year_min=int(rng.integers(1950, 2030)) if rng.random() < 0.4 else None,
            year_max=int(rng.integers(1950, 2030)) if rng.random() < 0.4 else None,
        )
        query = rng.standard_normal(dim).astype(np.float32)
        excluded = {f"i{n}" for n in rng.integers(1_500, size=20)}
        k = int(rng.integers(1, 60))
        expected = sorted(
            (
                (float(vector @ query), item_id)
                for item_id, (item, vector) in alive.items()
                if item_id not in hidden and item_id not in excluded and _passes(item, f)
            ),
            reverse=True,
        )[:k]
        got = delta.search_delta(query, k, f, excluded)
        assert [i for i, _ in got] == [i for _, i in expected]
        assert np.allclose([s for _, s in got], [s for s, _ in expected], atol=1e-5)
