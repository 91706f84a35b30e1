from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """In-process `python -m models ...` (a subprocess per call would cost seconds of imports)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def test_python_dash_m_models_runs_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "models",
            "build",
            "--dataset",
            "nope",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown dataset 'nope'")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["build", "evaluate", "synth", "bench-index", "tune-dual"])
def test_every_command_has_help(command: str) -> None:
    done = _run(command, "--help")
    assert done.returncode == 0
    assert "usage:" in done.stdout


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synth"
    done = _run("synth", "--items", "120", "--users", "150", "--out", str(out), "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert "150 users" in done.stdout
    return out


def test_build_and_evaluate_from_a_synthetic_directory(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = _run(
        "build",
        "--dataset",
        "generic",
        "--data-dir",
        str(synth_dir),
        "--out",
        str(out),
        "--quick",
        "--epochs",
        "1",
        "--no-progress",
        "--no-baselines",
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_users"] == 150
    assert (tmp_path / "bundle.report.json").is_file()
    assert (tmp_path / "bundle.report.png").is_file()

    report = tmp_path / "eval.json"
    done = _run(
        "evaluate",
        "--dataset",
        "generic",
        "--data-dir",
        str(synth_dir),
        "--quick",
        "--epochs",
        "1",
        "--no-progress",
        "--json",
        str(report),
    )
    assert done.returncode == 0, done.stderr
    assert "itemknn" in done.stdout
    document = json.loads(report.read_text())
    assert set(document["models"]) >= {"two_tower", "popularity", "itemknn", "ials"}
    assert set(document["models"]["two_tower"]) >= {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert report.with_suffix(".png").is_file()
    strong = document["strong_generalization"]
    assert set(strong) == {"all_positive"}  # every weight is 1: no ratings to call low
    assert set(strong["all_positive"]["models"]) == {"two_tower", "popularity", "itemknn", "ease"}
    assert strong["all_positive"]["held_out_users"] == 23  # 15% of 150, rounded half up
    cold = document["cold_start_items"]
    assert cold["held_out_items"] == round(0.1 * cold["items"])
    assert set(cold["models"]) >= {"two_tower_content_only", "random", "popularity_known_count"}
    assert "cold-start items:" in done.stdout


def test_tune_dual_scores_each_config_on_validation_pairs(synth_dir: Path, tmp_path: Path) -> None:
    data = ("--dataset", "generic", "--data-dir", str(synth_dir))
    out = tmp_path / "tune.json"
    configs = ("--config", "epochs=1,ns_exponent=0.5", "--config", "epochs=1,optimizer=sparse_adam")
    done = _run("tune-dual", *data, *configs, "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "cooccurrence_w3 (validation reference)" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["config"]["ns_exponent"], r["config"]["optimizer"]) for r in rows] == [
        (0.5, "sgd"),
        (0.25, "sparse_adam"),
    ]
    assert all(0.0 <= r["recall@20"] <= 1.0 for r in rows)
    bad = _run("tune-dual", *data, "--config", "epoch=3")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "bad SGNS override 'epoch=3'" in bad.stderr


def test_existing_output_is_a_one_line_error(synth_dir: Path, tmp_path: Path) -> None:
    done = _run(
        "build",
        "--dataset",
        "generic",
        "--data-dir",
        str(synth_dir),
        "--out",
        str(tmp_path),
        "--quick",
        "--no-progress",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "already exists" in done.stderr
    assert str(tmp_path) in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "nope"], "unknown dataset"),
        (["--dataset", "ml-100k", "--data-dir", "/nonexistent/ml-100k"], "/nonexistent/ml-100k"),
    ],
)
def test_bad_datasets_are_one_line_errors(args: list[str], expected: str, tmp_path: Path) -> None:
    done = _run("build", *args, "--out", str(tmp_path / "b"), "--quick", "--no-progress")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr
    assert not (tmp_path / "b").exists()


def test_malformed_file_names_the_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "u.data").write_text("1\t2\tnot-a-rating\n")
    done = _run(
        "build",
        "--dataset",
        "ml-100k",
        "--data-dir",
        str(data),
        "--out",
        str(tmp_path / "b"),
        "--quick",
        "--no-progress",
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "u." in done.stderr
    assert not (tmp_path / "b").exists()
