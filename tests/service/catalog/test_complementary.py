"""Dual embeddings in a bundle: loaded when declared, searched through their own FAISS index,
refused when corrupt, optional."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from service.catalog.bundle import load_bundle
from service.errors import BundleError


def _manifest(bundle: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return manifest


def _rehash(bundle: Path, name: str) -> None:
    manifest = _manifest(bundle)
    data = (bundle / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_declared_dual_embeddings_load_with_their_index(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    spec = _manifest(bundle_dir)["complementary"]
    assert spec["in_file"] == "item_in.npy"
    assert spec["index"]["file"] == "complementary.faiss"
    assert spec["index"]["type"] == "flat_ip"  # a small catalog: exact, like the main index
    assert "complementary.faiss" in _manifest(bundle_dir)["files"]
    assert bundle.complementary is not None
    assert len(bundle.complementary) == len(bundle.catalog)
    assert bundle.complementary.has(1)
    assert not bundle.complementary.has(len(bundle.catalog))


def test_a_basket_searches_summed_in_vectors_against_out_vectors(bundle_dir: Path) -> None:
    dual = load_bundle(bundle_dir).complementary
    assert dual is not None
    item_in = np.load(bundle_dir / "item_in.npy")
    item_out = np.load(bundle_dir / "item_out.npy")
    query = dual.query([1, 2])
    assert query is not None
    assert np.allclose(query, item_in[1] + item_in[2], atol=1e-6)
    rows, scores = dual.retriever.search(query, 10, excluded={1, 2})
    expected = item_out @ (item_in[1] + item_in[2])
    expected[[1, 2]] = -np.inf
    assert rows == np.argsort(-expected, kind="stable")[:10].tolist()
    assert np.allclose(scores, expected[rows], atol=1e-5)


def test_a_row_without_vectors_is_reported(bundle_copy: Path) -> None:
    item_in = np.load(bundle_copy / "item_in.npy")
    item_in[4] = 0.0
    np.save(bundle_copy / "item_in.npy", item_in)
    _rehash(bundle_copy, "item_in.npy")
    dual = load_bundle(bundle_copy).complementary
    assert dual is not None
    assert not dual.has(4)
    assert dual.has(5)
    assert dual.query([4]) is None
    only_five = dual.query([4, 5])
    assert only_five is not None
    assert np.array_equal(only_five, item_in[5])


def test_a_flipped_byte_in_the_out_vectors_is_caught(bundle_copy: Path) -> None:
    path = bundle_copy / "item_out.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"item_out\.npy: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_a_wrong_shape_is_refused(bundle_copy: Path) -> None:
    item_out = np.load(bundle_copy / "item_out.npy")
    np.save(bundle_copy / "item_out.npy", item_out[:-1])
    _rehash(bundle_copy, "item_out.npy")
    with pytest.raises(BundleError, match=r"item_out\.npy must be float32"):
        load_bundle(bundle_copy)


def test_a_declared_file_that_is_not_listed_is_refused(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    del manifest["files"]["item_in.npy"]
    (bundle_copy / "item_in.npy").unlink()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="item_in"):
        load_bundle(bundle_copy)


def test_a_flipped_byte_in_the_index_is_caught(bundle_copy: Path) -> None:
    path = bundle_copy / "complementary.faiss"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"complementary\.faiss: sha256 mismatch"):
        load_bundle(bundle_copy)


def test_an_index_of_another_size_is_refused(bundle_copy: Path) -> None:
    item_out = np.load(bundle_copy / "item_out.npy")
    index = faiss.IndexFlatIP(item_out.shape[1])
    index.add(item_out[:-3])
    faiss.write_index(index, str(bundle_copy / "complementary.faiss"))
    _rehash(bundle_copy, "complementary.faiss")
    with pytest.raises(BundleError, match=r"complementary\.faiss: index holds"):
        load_bundle(bundle_copy)


def test_an_index_of_another_dimension_is_refused(bundle_copy: Path) -> None:
    item_out = np.load(bundle_copy / "item_out.npy")
    index = faiss.IndexFlatIP(item_out.shape[1] + 1)
    index.add(np.zeros((len(item_out), item_out.shape[1] + 1), dtype=np.float32))
    faiss.write_index(index, str(bundle_copy / "complementary.faiss"))
    _rehash(bundle_copy, "complementary.faiss")
    with pytest.raises(BundleError, match=r"complementary\.faiss: index dimension"):
        load_bundle(bundle_copy)


def test_an_l2_index_is_refused(bundle_copy: Path) -> None:
    item_out = np.load(bundle_copy / "item_out.npy")
    index = faiss.IndexFlatL2(item_out.shape[1])
    index.add(item_out)
    faiss.write_index(index, str(bundle_copy / "complementary.faiss"))
    _rehash(bundle_copy, "complementary.faiss")
    with pytest.raises(BundleError, match=r"complementary\.faiss: index metric"):
        load_bundle(bundle_copy)


def test_a_section_without_its_index_is_refused(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    del manifest["complementary"]["index"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"complementary\.index"):
        load_bundle(bundle_copy)


def test_bundles_without_dual_embeddings_stay_valid(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    manifest["complementary"] = None
    for name in ("item_in.npy", "item_out.npy", "complementary.faiss"):
        del manifest["files"][name]
        (bundle_copy / name).unlink()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(bundle_copy).complementary is None
