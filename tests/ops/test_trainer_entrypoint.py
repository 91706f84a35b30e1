"""docker/trainer-entrypoint.sh, run outside Docker on a temp volume and a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ops.conftest import run_entrypoint, trainer_env


def test_the_first_run_builds_a_complete_bundle(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["dataset"] == "synth"
    for name in manifest["files"]:
        assert (bundle / name).is_file(), name


def test_a_second_run_keeps_the_bundle_and_succeeds(
    trainer_volume: Path, synth_data: Path, bundle: Path
) -> None:
    before = (bundle / "manifest.json").stat().st_mtime_ns
    done = run_entrypoint(trainer_env(trainer_volume, synth_data), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nothing to build" in done.stdout
    assert (bundle / "manifest.json").stat().st_mtime_ns == before


def test_a_leftover_directory_without_manifest_is_refused(tmp_path: Path, synth_data: Path) -> None:
    env = trainer_env(tmp_path, synth_data)
    Path(env["DUET_BUNDLE"]).mkdir(parents=True)
    done = run_entrypoint(env, timeout=60)
    assert done.returncode == 1
    assert "holds no manifest.json" in done.stderr


def test_a_failed_build_exits_non_zero_and_leaves_no_bundle(tmp_path: Path) -> None:
    env = trainer_env(tmp_path, tmp_path / "no-such-data")
    done = run_entrypoint(env, timeout=120)
    assert done.returncode != 0
    assert "no-such-data" in done.stderr
    assert not (Path(env["DUET_BUNDLE"]) / "manifest.json").exists()
