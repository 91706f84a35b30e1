"""The report: table rows and ratios, JSON shape, a PNG that opens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from models.report import plot_report, ratios, render_table, write_report

RESULTS = {
    "two_tower": {"recall@10": 0.22, "recall@20": 0.30, "ndcg@10": 0.20, "ndcg@20": 0.25},
    "popularity": {"recall@10": 0.10, "recall@20": 0.12, "ndcg@10": 0.10, "ndcg@20": 0.11},
    "itemknn": {"recall@10": 0.20, "recall@20": 0.24, "ndcg@10": 0.19, "ndcg@20": 0.20},
    "ials": {"recall@10": 0.19, "recall@20": 0.25, "ndcg@10": 0.21, "ndcg@20": 0.19},
}
CURVE = [
    {"epoch": 1.0, "loss": 5.0, "valid_recall@20": 0.10},
    {"epoch": 2.0, "loss": 4.2, "valid_recall@20": 0.14},
    {"epoch": 3.0, "loss": 3.9, "valid_recall@20": 0.13},
]


def test_ratios_use_the_best_baseline_per_metric() -> None:
    got = ratios(RESULTS)
    assert set(got) == {"two_tower"}
    assert got["two_tower"]["recall@10"] == pytest.approx(0.22 / 0.20)  # itemknn
    assert got["two_tower"]["recall@20"] == pytest.approx(0.30 / 0.25)  # ials
    assert got["two_tower"]["ndcg@10"] == pytest.approx(0.20 / 0.21)  # ials
    assert got["two_tower"]["ndcg@20"] == pytest.approx(0.25 / 0.20)  # itemknn
    assert ratios({"two_tower": RESULTS["two_tower"]}) == {}


def test_render_table_rows_and_columns() -> None:
    lines = render_table(RESULTS).splitlines()
    assert lines[0].split() == ["model", "recall@10", "recall@20", "ndcg@10", "ndcg@20"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert rows["two_tower"] == ["0.2200", "0.3000", "0.2000", "0.2500"]
    assert rows["ials"] == ["0.1900", "0.2500", "0.2100", "0.1900"]
    assert lines[6].split() == [
        "two_tower",
        "/",
        "best",
        "baseline",
        "1.10x",
        "1.20x",
        "0.95x",
        "1.25x",
    ]
    partial = render_table({"itemknn": {"recall@20": 0.2}})
    assert "—" in partial and "best baseline" not in partial


def test_write_report_json_shape(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "ml-100k.json"
    extra = {"seconds": {"total": np.float64(12.5)}, "curve": CURVE, "gap": float("nan")}
    write_report(path, dataset="ml-100k", results=RESULTS, extra=extra)
    document = json.loads(path.read_text())
    assert document["dataset"] == "ml-100k"
    assert list(document["models"]) == ["two_tower", "popularity", "itemknn", "ials"]
    assert document["models"]["ials"]["recall@20"] == 0.25
    assert document["ratio_to_best_baseline"]["two_tower"]["recall@20"] == pytest.approx(1.2)
    assert document["seconds"] == {"total": 12.5}
    assert document["curve"] == CURVE
    assert document["gap"] is None  # NaN is not JSON
    assert [p.name for p in path.parent.iterdir()] == ["ml-100k.json"]
    with pytest.raises(ValueError, match="may not override"):
        write_report(path, dataset="x", results=RESULTS, extra={"models": {}})


def test_plot_report_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "report.png"
    plot_report(path, curve=CURVE, results=RESULTS, title="ml-100k")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (450, 1200)
    assert image[..., :3].std() > 0.05  # something was drawn
    plot_report(tmp_path / "empty.png", curve=[], results={"popularity": RESULTS["popularity"]})
    assert (tmp_path / "empty.png").stat().st_size > 1000
