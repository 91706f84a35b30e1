from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.export import write_onnx
from service.catalog.bundle import load_bundle
from service.catalog.encoder import check_signature, open_session
from service.errors import BundleError
from tests.service.catalog.test_bundle import _manifest, _rehash, _write_manifest


def test_history_is_right_aligned_and_truncated_to_the_most_recent(bundle_dir: Path) -> None:
    encoder = load_bundle(bundle_dir).encoder
    length = encoder.history_length
    long_history = list(range(length + 5))
    same = encoder.encode_many([1, 1], [long_history, long_history[-length:]])
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    batch = encoder.encode_many([1, 2], [[3, 4], []])
    np.testing.assert_allclose(batch[0], encoder.encode(1, [3, 4]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)


def test_signature_mismatches_are_named(bundle_dir: Path) -> None:
    session = open_session(bundle_dir / "user_tower.onnx")
    dim = json.loads((bundle_dir / "manifest.json").read_text())["embedding_dim"]
    good = {
        "inputs": [{"name": i.name, "dtype": "int64", "shape": ["batch"] * len(i.shape)}
                   for i in session.get_inputs()],
        "outputs": [{"name": "user_embedding", "dtype": "float32", "shape": ["batch", dim]}],
    }  # fmt: skip
    check_signature(session, good, "user_tower")
    wrong_dtype = {**good, "outputs": [{**good["outputs"][0], "dtype": "int64"}]}
    with pytest.raises(BundleError, match="dtype"):
        check_signature(session, wrong_dtype, "user_tower")
    wrong_dim = {**good, "outputs": [{**good["outputs"][0], "shape": ["batch", dim + 1]}]}
    with pytest.raises(BundleError, match="shape"):
        check_signature(session, wrong_dim, "user_tower")
    wrong_rank = {**good, "outputs": [{**good["outputs"][0], "shape": ["batch"]}]}
    with pytest.raises(BundleError, match="rank"):
        check_signature(session, wrong_rank, "user_tower")


def test_garbage_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(BundleError):
        open_session(tmp_path / "garbage.onnx")


def test_a_tower_with_external_weights_loads_and_encodes_the_same(bundle_copy: Path) -> None:
    """Large towers keep their weights in NAME.data (mapped by ONNX Runtime, shared by workers)."""
    before = load_bundle(bundle_copy).encoder.encode(1, [0, 1, 2])
    model = (bundle_copy / "user_tower.onnx").read_bytes()
    (bundle_copy / "user_tower.onnx").unlink()
    write_onnx(bundle_copy, "user_tower.onnx", model, threshold=256)
    assert (bundle_copy / "user_tower.onnx.data").stat().st_size > 0
    for name in ("user_tower.onnx", "user_tower.onnx.data"):
        _rehash(bundle_copy, name)
    after = load_bundle(bundle_copy).encoder.encode(1, [0, 1, 2])
    np.testing.assert_allclose(after, before, atol=1e-6)
    manifest = _manifest(bundle_copy)
    del manifest["files"]["user_tower.onnx.data"]
    _write_manifest(bundle_copy, manifest)
    with pytest.raises(BundleError, match="not a file the manifest lists"):
        load_bundle(bundle_copy)
