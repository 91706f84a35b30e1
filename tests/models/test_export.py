from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
import pytest
import torch

from models import export
from models.catalog_files import CATALOG_FILES, id_hash
from models.export import BundleInputs, ExportError, verify_bundle, write_bundle
from models.features import ItemFeatures, build_item_features
from models.index import IndexSpec
from models.towers import TowerConfig, TwoTower
from models.types import Dataset, Split, UserFeatures

CONFIG = TowerConfig(dim=8, history_length=6, num_layers=1, num_heads=1)


def _model(dataset: Dataset, features: ItemFeatures) -> TwoTower:
    torch.manual_seed(0)
    cards = None if dataset.user_features is None else dataset.user_features.cardinalities
    return TwoTower(
        num_users=dataset.num_users,
        num_items=dataset.num_items,
        num_genres=len(features.genre_vocab),
        title_buckets=features.title_hash_buckets,
        config=CONFIG,
        feature_cardinalities=cards,
    )


def _inputs(dataset: Dataset, split: Split) -> BundleInputs:
    return BundleInputs(
        dataset=dataset,
        train_full=split.train_full,
        item_features=build_item_features(dataset.items),
        training={"loss": "logq_softmax", "epochs": 1, "seed": 0, "pooling": "attention"},
        metrics={"two_tower": {"recall@10": 0.1, "recall@20": 0.2, "ndcg@10": 0.1, "ndcg@20": 0.1}},
    )


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset, tiny_split: Split
) -> Path:
    inputs = _inputs(tiny_dataset, tiny_split)
    out = tmp_path_factory.mktemp("export") / "bundle"
    write_bundle(out, _model(tiny_dataset, inputs.item_features), inputs)
    return out


def test_bundle_holds_exactly_the_contract_files(bundle: Path) -> None:
    names = {p.name for p in bundle.iterdir()}
    external = {n for n in names if n.endswith(".onnx.data")}  # tensors of 1 MB and more
    assert external == {"item_tower.onnx.data"}  # the title-token table; the ids are few here
    assert names - external == {
        "manifest.json",
        "user_tower.onnx",
        "item_tower.onnx",
        "items.faiss",
        "item_embeddings.npy",
        "popularity.json",
        *CATALOG_FILES,
    }
    manifest = verify_bundle(bundle)
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert not list(bundle.parent.glob(".bundle.tmp-*"))


def test_manifest_describes_the_towers(bundle: Path, tiny_dataset: Dataset) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    n = tiny_dataset.num_items
    assert manifest["format_version"] == 2
    assert manifest["bundle_version"].startswith(f"{tiny_dataset.name}-")
    assert manifest["num_items"] == n and manifest["num_users"] == tiny_dataset.num_users
    assert manifest["index"]["type"] == "flat_ip" and manifest["index"]["ntotal"] == n
    assert manifest["index"]["recall_at_100"] == 1.0
    user = manifest["user_tower"]
    assert user["padding_idx"] == n and user["user_vocab_size"] == tiny_dataset.num_users + 1
    assert [i["name"] for i in user["inputs"]] == ["user_idx", "history"]
    assert user["user_features"] is None
    item = manifest["item_tower"]
    assert [i["name"] for i in item["inputs"]] == ["item_idx", "genres", "year", "title_tokens"]
    assert item["title_hash_buckets"] == 50_000 and item["title_max_tokens"] == 16
    assert manifest["training_data"]["fingerprint"] == tiny_dataset.fingerprint
    assert manifest["training"]["onnx_parity_max_abs_diff"]["user_tower"] <= 1e-5
    assert manifest["metrics"]["two_tower"]["recall@20"] == 0.2


def test_onnx_towers_and_index_agree_with_the_embeddings(
    bundle: Path, tiny_dataset: Dataset
) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    embeddings = np.load(bundle / "item_embeddings.npy", allow_pickle=False)
    n = tiny_dataset.num_items
    assert embeddings.shape == (n, 8) and embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    features = build_item_features(tiny_dataset.items)
    item = ort.InferenceSession(str(bundle / "item_tower.onnx"))
    rows = np.arange(n)
    out = item.run(
        None,
        {
            "item_idx": rows,
            "genres": features.genres[:n],
            "year": features.year[:n],
            "title_tokens": features.title_tokens[:n],
        },
    )[0]
    assert np.abs(out - embeddings).max() < 1e-5
    user = ort.InferenceSession(str(bundle / "user_tower.onnx"))
    history = np.full((5, 6), n, dtype=np.int64)
    history[:, -1] = rows[:5]
    vectors = user.run(None, {"user_idx": np.arange(5, dtype=np.int64), "history": history})[0]
    assert vectors.shape == (5, 8)
    index = faiss.read_index(str(bundle / "items.faiss"))
    _, found = index.search(vectors, 3)
    assert np.array_equal(found[:, 0], np.argmax(vectors @ embeddings.T, axis=1))
    assert manifest["user_tower"]["history_length"] == 6


def _strings(bundle: Path, name: str) -> list[str]:
    blob = np.load(bundle / f"{name}.npy").tobytes()
    bounds = np.load(bundle / f"{name}.offsets.npy")
    return [blob[a:b].decode() for a, b in itertools.pairwise(bounds)]


def test_metadata_files(bundle: Path, tiny_dataset: Dataset, tiny_split: Split) -> None:
    assert _strings(bundle, "item_ids") == tiny_dataset.items.ids
    assert _strings(bundle, "item_titles") == tiny_dataset.items.titles
    assert _strings(bundle, "user_ids") == tiny_dataset.user_ids
    vocab = json.loads((bundle / "manifest.json").read_text())["catalog"]["genre_vocab"]
    codes, bounds = np.load(bundle / "item_genres.npy"), np.load(bundle / "item_genres.offsets.npy")
    genres = [tuple(vocab[c] for c in codes[a:b]) for a, b in itertools.pairwise(bounds)]
    assert genres == [tuple(g) for g in tiny_dataset.items.genres]
    assert np.array_equal(np.load(bundle / "item_years.npy"), tiny_dataset.items.years)
    for name, ids in (("item_ids", tiny_dataset.items.ids), ("user_ids", tiny_dataset.user_ids)):
        hashes, order = np.load(bundle / f"{name}.hash.npy"), np.load(bundle / f"{name}.order.npy")
        assert np.all(np.diff(hashes.astype(np.float64)) >= 0)
        assert [int(h) for h in hashes] == [id_hash(ids[row]) for row in order]
    popularity = json.loads((bundle / "popularity.json").read_text())
    counts = np.bincount(tiny_split.train_full.item, minlength=tiny_dataset.num_items)
    assert popularity[0]["item_id"] == tiny_dataset.items.ids[int(np.argmax(counts))]
    scores = [p["score"] for p in popularity]
    assert scores == sorted(scores, reverse=True)


def test_existing_output_is_refused(bundle: Path, tiny_dataset: Dataset, tiny_split: Split) -> None:
    inputs = _inputs(tiny_dataset, tiny_split)
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        write_bundle(bundle, _model(tiny_dataset, inputs.item_features), inputs)
    assert (bundle / "manifest.json").read_bytes() == before


def test_failed_parity_leaves_nothing(
    tmp_path: Path, tiny_dataset: Dataset, tiny_split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # any difference now fails
    inputs = _inputs(tiny_dataset, tiny_split)
    with pytest.raises(ExportError, match="parity"):
        write_bundle(tmp_path / "out", _model(tiny_dataset, inputs.item_features), inputs)
    assert list(tmp_path.iterdir()) == []


def test_failure_inside_the_write_removes_the_temp_dir(
    tmp_path: Path, tiny_dataset: Dataset, tiny_split: Split
) -> None:
    inputs = _inputs(tiny_dataset, tiny_split)
    with pytest.raises(OSError):
        write_bundle(
            tmp_path / "out",
            _model(tiny_dataset, inputs.item_features),
            inputs,
            extra_files={"../escape/x": b"no"},
        )
    assert list(tmp_path.iterdir()) == []


def test_verify_detects_a_changed_file(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "popularity.json").write_text("[]\n")
    with pytest.raises(ExportError, match=r"popularity\.json: checksum mismatch"):
        verify_bundle(copy)


def test_user_features_are_exported(
    tmp_path: Path, tiny_dataset: Dataset, tiny_split: Split
) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(1, 3, size=(tiny_dataset.num_users, 2)).astype(np.int64)
    dataset = replace(tiny_dataset, user_features=UserFeatures(["gender", "age"], [3, 3], values))
    inputs = replace(_inputs(dataset, tiny_split), dataset=dataset)
    manifest = write_bundle(tmp_path / "b", _model(dataset, inputs.item_features), inputs)
    assert manifest["user_tower"]["user_features"] == {
        "names": ["gender", "age"],
        "cardinalities": [3, 3],
    }
    matrix = np.load(tmp_path / "b" / "user_features.npy", allow_pickle=False)
    assert matrix.shape == (dataset.num_users + 1, 2) and not matrix[0].any()
    session = ort.InferenceSession(str(tmp_path / "b" / "user_tower.onnx"))
    assert [i.name for i in session.get_inputs()] == ["user_idx", "history", "user_features"]


def test_large_catalog_gets_an_ann_index_with_measured_recall(
    tmp_path: Path, tiny_dataset: Dataset, tiny_split: Split
) -> None:
    inputs = _inputs(tiny_dataset, tiny_split)
    manifest = write_bundle(
        tmp_path / "b",
        _model(tiny_dataset, inputs.item_features),
        inputs,
        index_spec=IndexSpec(exact_threshold=10, large="hnsw"),
    )
    assert manifest["index"]["type"] == "hnsw"
    assert set(manifest["index"]["params"]) == {"M", "efConstruction", "efSearch"}
    assert manifest["index"]["recall_at_100"] >= 0.95
    index = faiss.read_index(str(tmp_path / "b" / "items.faiss"))
    assert index.ntotal == tiny_dataset.num_items


def test_dual_embeddings_come_with_their_own_index(
    tmp_path: Path, tiny_dataset: Dataset, tiny_split: Split
) -> None:
    rng = np.random.default_rng(0)
    n = tiny_dataset.num_items
    item_in = rng.normal(size=(n, 5)).astype(np.float32)
    item_out = rng.normal(size=(n, 5)).astype(np.float32)
    item_in[3] = 0.0  # no dual embedding: not a query the index is tuned on
    params = {"dim": 4, "window": 3}
    inputs = replace(
        _inputs(tiny_dataset, tiny_split), dual=(item_in, item_out), dual_params=params
    )
    out = tmp_path / "bundle"
    manifest = write_bundle(out, _model(tiny_dataset, inputs.item_features), inputs)
    assert verify_bundle(out) == manifest
    section = manifest["complementary"]
    assert section["dim"] == 5 and section["params"] == params
    assert section["index"]["file"] == "complementary.faiss"
    assert section["index"]["type"] == "flat_ip"
    assert section["index"]["ntotal"] == n
    assert section["index"]["recall_at_100"] == 1.0
    assert {"item_in.npy", "item_out.npy", "complementary.faiss"} <= set(manifest["files"])
    index = faiss.read_index(str(out / "complementary.faiss"))
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    _, found = index.search(item_in[:1], 5)
    assert found[0].tolist() == np.argsort(-(item_out @ item_in[0]))[:5].tolist()


def test_a_large_dual_table_gets_an_approximate_index() -> None:
    rng = np.random.default_rng(1)
    item_in = rng.normal(size=(3000, 8)).astype(np.float32)
    item_out = rng.normal(size=(3000, 8)).astype(np.float32)
    built = export.build_dual_index(item_in, item_out, IndexSpec(exact_threshold=1000))
    assert built.kind == "ivf"
    assert built.recall_at_100 >= 0.95  # tuned on IN queries against exact IN.OUT
