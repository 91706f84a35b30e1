from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.catalog.bundle import load_bundle
from service.catalog.encoder import check_signature, open_session
from service.errors import BundleError


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
    session = open_session((bundle_dir / "user_tower.onnx").read_bytes())
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


def test_garbage_is_not_a_model() -> None:
    with pytest.raises(BundleError):
        open_session(b"\x08\x07garbage")
