"""Cold-start items: the hold-out, the placements and the served content-only embedding."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.cold_items import (
    catalog_vectors,
    choose_items,
    content_only_vectors,
    evaluate_cold_items,
    genre_bucket_counts,
    protocol,
    random_placement,
    render_cold_table,
    without_items,
)
from models.datasets import synthesize
from models.export import export_towers, item_embeddings
from models.metrics import evaluate_ranking
from models.pipeline import evaluate, split_dataset
from models.train import TrainConfig, train
from models.types import Dataset, Interactions, Split
from service.catalog.item_embedder import ItemEmbedder
from service.catalog.live import LiveItem


def _log(users: list[int], items: list[int]) -> Interactions:
    n = len(users)
    return Interactions(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.arange(n, dtype=np.int64),
        np.ones(n, dtype=np.float32),
    )


@pytest.fixture(scope="module")
def content_dataset() -> Dataset:
    """Clustered users and items, the items' genres, titles and years drawn from their cluster:
    content says where an item belongs."""
    return synthesize(600, 400, seed=3, interactions_per_user=30, num_clusters=8)


@pytest.fixture(scope="module")
def content_split(content_dataset: Dataset) -> Split:
    return split_dataset(content_dataset)


@pytest.fixture(scope="module")
def cold_table(content_dataset: Dataset, content_split: Split) -> dict[str, Any]:
    config = TrainConfig.tiny(max_epochs=4)
    warm = train(content_dataset, content_split, config, progress=False)
    return evaluate_cold_items(
        content_dataset, content_split, config=config, warm=warm, progress=False
    )


def test_a_seeded_tenth_of_the_items_is_held_out(tiny_split: Split) -> None:
    first = choose_items(tiny_split.train_full, tiny_split.num_items, seed=4)
    again = choose_items(tiny_split.train_full, tiny_split.num_items, seed=4)
    other = choose_items(tiny_split.train_full, tiny_split.num_items, seed=5)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    eligible = np.bincount(tiny_split.train_full.item, minlength=tiny_split.num_items) > 0
    assert first.sum() == int(np.floor(0.1 * eligible.sum() + 0.5))
    assert not (first & ~eligible).any()  # only items with an interaction to retrieve


def test_held_out_items_never_reach_the_training_data(tiny_split: Split) -> None:
    held = choose_items(tiny_split.train_full, tiny_split.num_items, seed=0)
    cold = without_items(tiny_split, held)
    for part in (cold.train, cold.valid, cold.train_full, cold.test):
        assert not held[part.item].any()
    assert cold.num_items == tiny_split.num_items  # the rows stay in the catalog
    kept = ~held[tiny_split.train_full.item]
    assert len(cold.train_full) == int(kept.sum())


def test_protocol_targets_are_the_held_out_interactions(
    tiny_dataset: Dataset, tiny_split: Split
) -> None:
    held = choose_items(tiny_split.train_full, tiny_split.num_items, seed=0)
    prot = protocol(tiny_dataset, tiny_split, held)
    assert held[prot.targets.item].all() and not held[prot.history.item].any()
    assert len(prot.targets) == int(held[tiny_dataset.interactions.item].sum())
    assert held[prot.test_targets.item].all()
    assert len(prot.seen) == len(tiny_split.train_full)


def test_random_placement_is_the_exact_expectation() -> None:
    # user 0: 2 of 10 items excluded, 3 targets; user 1: nothing excluded, 1 target
    exclude = _log([0, 0], [0, 1])
    targets = _log([0, 0, 0, 1], [2, 3, 4, 9])
    found = random_placement(exclude, targets, num_items=10, k=2)
    # user 0: E[hits] = 3 * 2 / 8, over min(3, 2); user 1: 1 * 2 / 10, over 1
    assert found["recall@2"] == pytest.approx((0.75 / 2 + 0.2) / 2)
    everything = random_placement(exclude, targets, num_items=10, k=20)
    assert everything["recall@20"] == pytest.approx(1.0)  # k covers every candidate
    assert everything["ndcg@20"] <= 1.0

    rng = np.random.default_rng(0)
    draws = [
        evaluate_ranking(
            lambda rows: rng.random((len(rows), 10)).astype(np.float32),
            exclude=exclude,
            targets=targets,
            num_items=10,
            ks=(2,),
        )
        for _ in range(4000)
    ]
    for metric in ("recall@2", "ndcg@2"):
        mean = float(np.mean([d[metric] for d in draws]))
        assert mean == pytest.approx(found[metric], abs=0.02)


def test_genre_buckets_give_held_out_items_their_bucket_mean(tiny_dataset: Dataset) -> None:
    counts = np.arange(tiny_dataset.num_items, dtype=np.float32)
    held = np.zeros(tiny_dataset.num_items, dtype=bool)
    held[:5] = True
    out = genre_bucket_counts(tiny_dataset.items, counts, held)
    assert np.array_equal(out[~held], counts[~held])
    genres = [tuple(sorted(g)) for g in tiny_dataset.items.genres]
    same = [i for i in range(5, tiny_dataset.num_items) if genres[i] == genres[0]]
    expected = counts[same].mean() if same else counts[~held].mean()
    assert out[0] == pytest.approx(expected)


def test_informative_content_beats_random_placement(cold_table: dict[str, Any]) -> None:
    rows = cold_table["models"]
    assert set(rows) == {
        "two_tower_content_only",
        "two_tower_unknown_row",
        "random",
        "popularity_known_count",
        "popularity_genre_bucket",
        "two_tower_id_trained",
    }
    content = rows["two_tower_content_only"]["recall@20"]
    assert content > 1.5 * rows["random"]["recall@20"]
    assert content > rows["two_tower_unknown_row"]["recall@20"]  # the cold head earns its keep
    assert rows["two_tower_id_trained"]["recall@20"] > content  # ids know more than content
    assert cold_table["held_out_items"] == 40
    assert cold_table["users"] > 0 and cold_table["targets"] >= cold_table["users"]
    assert cold_table["test_period_targets"] <= cold_table["targets"]
    table = render_cold_table(cold_table)
    assert "40 of 400 items held out" in table and "popularity_known_count" in table


def test_offline_content_only_vectors_are_what_the_live_catalog_serves(
    content_dataset: Dataset, content_split: Split
) -> None:
    config = TrainConfig.tiny(max_epochs=1, cold_head_steps=50)
    result = train(content_dataset, content_split, config, progress=False)
    assert result.model.item.cold_fitted
    features = result.item_features
    _, item_onnx, _ = export_towers(result.model, features, None)
    session = ort.InferenceSession(item_onnx, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["item_idx", "genres", "year", "title_tokens"]
    assert [o.name for o in session.get_outputs()] == ["item_embedding"]
    embedder = ItemEmbedder(
        session,
        genre_vocab=features.genre_vocab,
        year_mean=features.year_mean,
        year_std=features.year_std,
        title_hash_buckets=features.title_hash_buckets,
        title_max_tokens=features.title_max_tokens,
        unknown_item_idx=features.num_items,
    )
    rows = np.arange(0, content_dataset.num_items, 7, dtype=np.int64)
    items = content_dataset.items
    live = [
        LiveItem(
            item_id=f"new-{row}",
            title=items.titles[row],
            genres=items.genres[row],
            year=int(items.years[row]) or None,
        )
        for row in rows.tolist()
    ]
    served = embedder.embed(live)
    offline = content_only_vectors(result.model, features, rows)
    np.testing.assert_allclose(served, offline, atol=1e-5)


def test_the_cold_head_moves_only_the_unknown_item_row(
    content_dataset: Dataset, content_split: Split
) -> None:
    config = TrainConfig.tiny(max_epochs=1, cold_head_steps=50)
    result = train(content_dataset, content_split, config, progress=False)
    no_head = replace(config, cold_head_steps=0)
    plain = train(content_dataset, content_split, no_head, progress=False)
    assert not plain.model.item.cold_fitted
    assert plain.test_metrics == result.test_metrics  # training itself is untouched
    features = result.item_features
    warm = item_embeddings(result.model, features)
    np.testing.assert_array_equal(warm, item_embeddings(plain.model, features))
    held = np.zeros(content_dataset.num_items, dtype=bool)
    held[:10] = True
    with_head = catalog_vectors(result.model, features, held)
    without = catalog_vectors(result.model, features, held, cold_head=False)
    np.testing.assert_allclose(
        without[:10], content_only_vectors(plain.model, features, np.arange(10)), atol=1e-6
    )
    assert not np.allclose(with_head[:10], without[:10])
    np.testing.assert_array_equal(with_head[10:], without[10:])
    norms = np.linalg.norm(with_head, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert torch.equal(  # the shared id table is the user tower's too: untouched
        result.model.item.id_embedding.weight, plain.model.item.id_embedding.weight
    )


def test_evaluate_reports_the_table_unless_skipped(tiny_dataset: Dataset) -> None:
    config = TrainConfig.tiny(max_epochs=1)
    found = evaluate(
        tiny_dataset, config=config, with_baselines=False, progress=False, cold_items=True
    )
    table = found.extra["cold_start_items"]
    assert table["held_out_items"] == 20 and "two_tower_id_trained" in table["models"]
    assert table["cold_model"]["train_interactions"] < len(split_dataset(tiny_dataset).train_full)
    skipped = evaluate(tiny_dataset, config=config, with_baselines=False, progress=False)
    assert "cold_start_items" not in skipped.extra
