"""Bundle verification: any tampering or inconsistency is refused before anything is served."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import onnx
import pytest

from service.catalog.bundle import load_bundle
from service.catalog.columns import read_strings
from service.errors import BundleError


def _manifest(bundle: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return manifest


def _write_manifest(bundle: Path, manifest: dict[str, Any]) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _rehash(bundle: Path, name: str) -> None:
    """Make the manifest agree with a file we changed on purpose (tests the later checks)."""
    manifest = _manifest(bundle)
    data = (bundle / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_manifest(bundle, manifest)


def test_a_valid_bundle_loads_into_consistent_objects(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    manifest = _manifest(bundle_dir)
    assert bundle.version == manifest["bundle_version"]
    assert len(bundle.catalog) == manifest["num_items"] == bundle.retriever.size
    assert len(bundle.catalog.users) == manifest["num_users"]
    assert bundle.catalog.users[read_strings(bundle_dir, "user_ids")[0]] == 1
    first = read_strings(bundle_dir, "item_ids")[0]
    assert bundle.catalog.rows[first] == 0 and bundle.catalog.item_ids[0] == first
    assert bundle.catalog.rows.get("no such item") is None
    vector = bundle.encoder.encode(1, [0, 1, 2])
    assert vector.shape == (manifest["embedding_dim"],)
    assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)


def test_a_flipped_byte_is_caught_by_the_checksum(bundle_copy: Path) -> None:
    path = bundle_copy / "items.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"items\.faiss: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_a_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "popularity.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_copy)


def test_a_file_the_manifest_forgets_is_refused(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    del manifest["files"]["user_ids.npy"]
    _write_manifest(bundle_copy, manifest)
    with pytest.raises(BundleError, match="does not list"):
        load_bundle(bundle_copy)


def test_an_index_of_the_wrong_dimension_is_refused(bundle_copy: Path) -> None:
    dim = _manifest(bundle_copy)["embedding_dim"]
    index = faiss.IndexFlatIP(dim + 1)
    index.add(np.zeros((_manifest(bundle_copy)["num_items"], dim + 1), dtype=np.float32))
    faiss.write_index(index, str(bundle_copy / "items.faiss"))
    _rehash(bundle_copy, "items.faiss")
    with pytest.raises(BundleError, match="index dimension"):
        load_bundle(bundle_copy)


def test_an_index_with_missing_items_is_refused(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    index = faiss.IndexFlatIP(manifest["embedding_dim"])
    index.add(np.zeros((manifest["num_items"] - 1, manifest["embedding_dim"]), np.float32))
    faiss.write_index(index, str(bundle_copy / "items.faiss"))
    _rehash(bundle_copy, "items.faiss")
    with pytest.raises(BundleError, match="vectors"):
        load_bundle(bundle_copy)


def test_a_manifest_dimension_the_tower_does_not_have_is_refused(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    manifest["embedding_dim"] += 1
    _write_manifest(bundle_copy, manifest)
    with pytest.raises(BundleError):
        load_bundle(bundle_copy)


def test_a_renamed_tower_input_is_refused(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    manifest["user_tower"]["inputs"][1]["name"] = "recent_items"
    _write_manifest(bundle_copy, manifest)
    with pytest.raises(BundleError, match="user_tower inputs"):
        load_bundle(bundle_copy)


def test_a_symlink_leaving_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes((bundle_copy / "item_titles.npy").read_bytes())
    (bundle_copy / "item_titles.npy").unlink()
    (bundle_copy / "item_titles.npy").symlink_to(outside)
    with pytest.raises(BundleError, match="leaves the bundle"):
        load_bundle(bundle_copy)


def test_onnx_external_data_is_refused(bundle_copy: Path) -> None:
    model = onnx.load(str(bundle_copy / "user_tower.onnx"))
    onnx.save_model(
        model,
        str(bundle_copy / "user_tower.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    _rehash(bundle_copy, "user_tower.onnx")
    with pytest.raises(BundleError, match="external data"):
        load_bundle(bundle_copy)


def test_pickled_arrays_are_refused(bundle_copy: Path) -> None:
    np.save(bundle_copy / "item_embeddings.npy", np.array([{"x": 1}], dtype=object))
    _rehash(bundle_copy, "item_embeddings.npy")
    with pytest.raises(BundleError, match="item_embeddings"):
        load_bundle(bundle_copy)


def test_nan_item_embeddings_are_refused(bundle_copy: Path) -> None:
    embeddings = np.load(bundle_copy / "item_embeddings.npy")
    embeddings[3, 0] = np.nan
    np.save(bundle_copy / "item_embeddings.npy", embeddings)
    _rehash(bundle_copy, "item_embeddings.npy")
    with pytest.raises(BundleError, match="NaN"):
        load_bundle(bundle_copy)


def test_not_a_bundle_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"manifest\.json"):
        load_bundle(tmp_path)
