"""bench/parity.py end to end on data made here: held-out users replayed over HTTP on a real
Redis and service are served what the offline strong-generalization figure promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.datasets import synthesize, write_synthetic
from tests.ops.conftest import REPO

PARITY = REPO / "bench" / "parity.py"


@pytest.fixture(scope="module")
def rated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 users x 150 items with ratings on the half-star scale."""
    dataset = synthesize(400, 150, seed=11, interactions_per_user=30, num_clusters=6)
    rng = np.random.default_rng(0)
    ratings = rng.choice(np.arange(1, 11) / 2, size=len(dataset.interactions))
    dataset = replace(
        dataset, interactions=replace(dataset.interactions, weight=ratings.astype(np.float32))
    )
    out = tmp_path_factory.mktemp("parity") / "rated"
    write_synthetic(dataset, out)
    return out


@pytest.mark.parametrize("setting", [[], ["--low-ratings-negative"]], ids=["views", "ratings"])
def test_served_recall_equals_offline_and_nothing_seen_is_served(
    rated_dir: Path, tmp_path: Path, setting: list[str]
) -> None:
    figures_path = tmp_path / "parity.json"
    done = subprocess.run(
        [sys.executable, str(PARITY), "--dataset", "synth", "--data-dir", str(rated_dir),
         "--quick", "--epochs", "2", "--json", str(figures_path), *setting],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    print(done.stdout, done.stderr)
    assert done.returncode == 0
    figures = json.loads(figures_path.read_text())
    assert figures["users"] == figures["offline_users"] > 50
    assert figures["seen_items_served"] == 0
    assert figures["offline_recall"] > 0.05
    assert figures["relative_difference"] <= 0.01
