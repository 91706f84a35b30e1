"""loadtest/locustfile.py, headless, against the service the session started (loopback only)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.ops.conftest import OPS_ADMIN_TOKEN, REPO
from tests.service.redis_server import free_port

LOCUSTFILE = REPO / "loadtest" / "locustfile.py"


def locust(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
         "--loglevel", "WARNING", *args],
        capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def aggregated(stats_csv: Path) -> dict[str, str]:
    with stats_csv.open(newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    return row


def test_smoke_run_has_no_failure_and_counts_requests_per_arm(
    service_port: int, bundle: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "smoke"
    done = locust(
        "--host", f"http://127.0.0.1:{service_port}", "--bundle", str(bundle),
        "-u", "4", "-r", "4", "-t", "20s", "--max-requests", "3000", "--seed", "1",
        "--think-time-ms", "100", "--max-p99-ms", "1000", "--csv", str(prefix),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "duet-loadtest: PASSED" in done.stdout
    total = aggregated(Path(f"{prefix}_stats.csv"))
    assert int(total["Request Count"]) > 100 and total["Failure Count"] == "0"
    with open(f"{prefix}_arms.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    routes = {r["route"] for r in rows}
    assert routes == {"/v1/recommend", "/v1/events", "/v1/items/[id]/similar", "/v1/retrieve"}
    # The compose stack runs docker/experiments.toml: two arms, half the users each.
    recommends = {r["arm"]: int(r["requests"]) for r in rows if r["route"] == "/v1/recommend"}
    assert set(recommends) == {"two_tower", "popularity_blend"}
    assert 0.3 < recommends["two_tower"] / sum(recommends.values()) < 0.7
    counts: Counter[str] = Counter()
    for r in rows:
        counts[r["route"]] += int(r["requests"])
    share = counts["/v1/recommend"] / sum(counts.values())
    assert 0.6 < share < 0.8, counts


def test_an_unreachable_service_fails_at_once_with_the_reason(bundle: Path) -> None:
    port = free_port()
    done = locust("--host", f"http://127.0.0.1:{port}", "--bundle", str(bundle), "-t", "30s",
                  timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert f"service unreachable: GET http://127.0.0.1:{port}/readyz" in done.stderr


def test_a_missed_p99_threshold_fails_the_run(service_port: int, bundle: Path) -> None:
    done = locust(
        "--host", f"http://127.0.0.1:{service_port}", "--bundle", str(bundle),
        "-u", "2", "-r", "2", "-t", "3s", "--max-p99-ms", "0.001",
    )  # fmt: skip
    assert done.returncode == 3
    assert "duet-loadtest: FAILED: p99" in done.stderr


def test_a_bundle_that_is_not_there_is_named(service_port: int, tmp_path: Path) -> None:
    done = locust("--host", f"http://127.0.0.1:{service_port}", "--bundle", str(tmp_path),
                  "-t", "3s", timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert f"cannot draw traffic from --bundle {tmp_path}" in done.stderr


def test_without_a_bundle_the_ids_come_from_the_service(service_port: int, tmp_path: Path) -> None:
    """The remote-deployment mode: no bundle on the load generator's machine."""
    prefix = tmp_path / "remote"
    done = locust(
        "--host", f"http://127.0.0.1:{service_port}", "--admin-token", OPS_ADMIN_TOKEN,
        "--sample-users", "50", "--sample-items", "40",
        "-u", "2", "-r", "2", "-t", "8s", "--max-requests", "400", "--seed", "3",
        "--max-p99-ms", "2000", "--csv", str(prefix),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    total = aggregated(Path(f"{prefix}_stats.csv"))
    assert int(total["Request Count"]) > 20 and total["Failure Count"] == "0"


def test_without_a_bundle_or_a_token_the_run_says_what_is_missing(service_port: int) -> None:
    env_token = os.environ.pop("DUET_ADMIN_TOKEN", None)
    try:
        done = locust("--host", f"http://127.0.0.1:{service_port}", "-t", "3s", timeout=30)
    finally:
        if env_token is not None:
            os.environ["DUET_ADMIN_TOKEN"] = env_token
    assert done.returncode == 2
    assert "cannot draw traffic from the service: no --bundle: pass --admin-token" in done.stderr
    wrong = locust("--host", f"http://127.0.0.1:{service_port}", "--admin-token", "x" * 20,
                   "-t", "3s", timeout=30)  # fmt: skip
    assert wrong.returncode == 2
    assert "/admin/sample-ids" in wrong.stderr and "answered 401" in wrong.stderr
