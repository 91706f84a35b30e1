"""bench/run.py end to end, briefly: its own Redis, service and hello-world app, driven by wrk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.ops.conftest import REPO

RUN = REPO / "bench" / "run.py"
# Not `events` here: at saturation on a busy CI machine Redis calls time out and the service
# answers 503 by design, which the harness reports as a failed run (see `make bench`).
SCENARIOS = [
    "hello",
    "recommend_warm",
    "recommend_filters",
    "recommend_cold",
    "retrieve",
    "similar",
    "complementary",
]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=240,
        check=False, cwd=REPO, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_a_short_run_writes_the_table_and_the_ratio(bundle: Path, tmp_path: Path) -> None:
    done = bench(
        "--bundle", str(bundle), "--out", str(tmp_path), "--duration", "1", "--warmup", "0",
        "--connections", "8", "--scenarios", ",".join(SCENARIOS), "--live-items", "300",
    )  # fmt: skip
    print(done.stdout, done.stderr)  # shown by pytest when an assertion below fails
    assert done.returncode == 0
    result = json.loads((tmp_path / "latest.json").read_text())
    assert list(result["scenarios"]) == SCENARIOS
    live = result["live"]  # the searching scenarios again, with 300 items posted live
    assert live["count"] == 300 and set(live["scenarios"]) == {
        "recommend_warm",
        "retrieve",
        "similar",
    }
    for name, run in live["scenarios"].items():
        assert run["requests"] > 0 and run["failed"] == 0, name
        assert run["vs_without"] == round(run["rps"] / result["scenarios"][name]["rps"], 3)
    for name, run in result["scenarios"].items():
        assert run["requests"] > 0 and run["failed"] == 0, name
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"], name
    # The service's own counters tell a warm run (cache hits) from a cold one (tower runs).
    warm_service = result["scenarios"]["recommend_warm"]["service"]
    assert warm_service["cache_hits_per_request"] > 0.5
    assert result["scenarios"]["recommend_cold"]["service"]["encodes_per_request"] >= 0.95
    warm, hello = result["scenarios"]["recommend_warm"]["rps"], result["scenarios"]["hello"]["rps"]
    assert result["ratio"] == round(warm / hello, 3)
    assert set(result["paced"]) == {"hello", "recommend_warm"}
    for paced in result["paced"].values():
        assert paced["target_rps"] > 0 and paced["requests"] > 0
    assert result["machine"]["cores"] == os.cpu_count()
    assert 10 < result["service_rss_mb"] < 2000
    table = (tmp_path / "latest.md").read_text()
    assert "| recommend_warm |" in table and result["machine"]["cpu"] in table
    assert "complementary / similar throughput" in table
    assert "With 300 live items posted" in table
    assert f"recommend/hello-world ratio = {result['ratio']:.2f}" in done.stdout


def test_a_missing_wrk_is_named_with_the_install_command(bundle: Path, tmp_path: Path) -> None:
    done = bench("--bundle", str(bundle), "--out", str(tmp_path), env={"PATH": str(tmp_path)})
    assert done.returncode == 1
    assert "wrk is not installed; install it with: sudo apt-get install -y wrk" in done.stderr
    assert not (tmp_path / "latest.json").exists()


def test_a_missing_bundle_is_named(tmp_path: Path) -> None:
    done = bench("--bundle", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert done.returncode == 1
    assert "is not a readable Duet bundle" in done.stderr


def test_the_readme_table_is_replaced_between_its_markers(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import report  # bench/ is a directory of scripts, not a package
    finally:
        sys.path.remove(str(REPO / "bench"))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\nlimits\n")
    assert report.update_readme(readme, "| new | table |\n")
    assert readme.read_text() == (
        "intro\n<!-- bench:start -->\n| new | table |\n<!-- bench:end -->\nlimits\n"
    )
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    assert not report.update_readme(plain, "| new |")
    assert plain.read_text() == "no markers\n"
