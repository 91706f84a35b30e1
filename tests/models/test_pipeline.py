from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from models.export import ExportError, verify_bundle
from models.pipeline import build, evaluate
from models.train import TrainConfig
from models.types import Dataset


def test_build_writes_a_verified_bundle_quickly(tmp_path: Path, tiny_dataset: Dataset) -> None:
    started = time.perf_counter()
    result = build(
        tiny_dataset,
        tmp_path / "bundle",
        config=TrainConfig.tiny(max_epochs=1),
        with_baselines=False,
        progress=False,
    )
    assert time.perf_counter() - started < 30  # the service fixtures rely on this path
    manifest = verify_bundle(tmp_path / "bundle")
    assert manifest == result.manifest
    assert set(result.metrics) == {"two_tower"}
    assert manifest["metrics"]["two_tower"] == result.metrics["two_tower"]
    assert manifest["training"]["loss"] == "logq_softmax"
    assert manifest["training"]["pooling"] == "mean"
    assert manifest["training"]["epochs"] == 1
    assert len(result.curve) == 1


def test_build_refuses_an_existing_directory_before_training(
    tmp_path: Path, tiny_dataset: Dataset
) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        build(tiny_dataset, tmp_path / "taken", config=TrainConfig.tiny(), progress=False)
    assert list((tmp_path / "taken").iterdir()) == []


def test_evaluate_compares_losses_and_baselines(tiny_dataset: Dataset) -> None:
    result = evaluate(
        tiny_dataset, config=TrainConfig.tiny(max_epochs=1), losses=("logq", "auc"), progress=False
    )
    assert {"two_tower", "two_tower_auc", "popularity", "itemknn", "ials"} <= set(result.metrics)
    for row in result.metrics.values():
        assert set(row) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    assert result.extra["two_tower_auc"]["loss"] == "auc"
    json.dumps(result.extra)  # the report's extra section must be plain JSON
