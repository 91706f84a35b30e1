"""Dual embeddings in a bundle: loaded when declared, refused when corrupt, optional."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

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


def test_declared_dual_embeddings_load_and_score_every_item(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    spec = _manifest(bundle_dir)["complementary"]
    assert spec["in_file"] == "item_in.npy"
    assert bundle.complementary is not None
    assert len(bundle.complementary) == len(bundle.catalog)
    item_in = np.load(bundle_dir / "item_in.npy")
    item_out = np.load(bundle_dir / "item_out.npy")
    expected = item_out @ (item_in[1] + item_in[2])
    assert np.allclose(bundle.complementary.scores([1, 2]), expected, atol=1e-5)
    assert bundle.complementary.has(1)
    assert not bundle.complementary.has(len(bundle.catalog))


def test_a_row_without_vectors_is_reported(bundle_copy: Path) -> None:
    item_in = np.load(bundle_copy / "item_in.npy")
    item_in[4] = 0.0
    np.save(bundle_copy / "item_in.npy", item_in)
    _rehash(bundle_copy, "item_in.npy")
    dual = load_bundle(bundle_copy).complementary
    assert dual is not None
    assert not dual.has(4)
    assert dual.has(5)


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


def test_bundles_without_dual_embeddings_stay_valid(bundle_copy: Path) -> None:
    manifest = _manifest(bundle_copy)
    manifest["complementary"] = None
    for name in ("item_in.npy", "item_out.npy"):
        del manifest["files"][name]
        (bundle_copy / name).unlink()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(bundle_copy).complementary is None
