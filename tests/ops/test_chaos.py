"""loadtest/chaos_redis.py, short: Redis killed under load and restarted, nothing lost;
loadtest/chaos_cluster.py, short: a cluster master killed under load, its replica takes over;
loadtest/overload.py, short: a real worker sheds at 3x capacity and not after; and the three
drills' refusals of nonsense arguments and of a missing bundle.

Only the invariants are asserted here (no answer but 2xx from recommend, no 202 event missing
from Redis, the breaker opened and closed again); the timing targets are the script's, for a
machine that is not also running the rest of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import REPO

LOADTEST = REPO / "loadtest"


def drill(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOADTEST / script), *args], capture_output=True, text=True,
        timeout=240, check=False, cwd=REPO,
    )  # fmt: skip


def test_a_short_outage_loses_no_event_and_fails_no_recommend(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    done = drill(
        "chaos_redis.py", "--bundle", str(bundle), "--warmup", "3", "--outage", "3",
        "--recovery", "20", "--recommend-rps", "80", "--events-rps", "30", "--connections", "4",
        "--json", str(out),
    )  # fmt: skip
    print(done.stdout, done.stderr)  # shown by pytest when an assertion below fails
    assert done.returncode in (0, 1)  # 1: a timing target missed on a busy machine
    result = json.loads(out.read_text())

    recommend = result["recommend"]
    assert recommend["requests"] > 100
    assert recommend["non_2xx"] == 0
    assert recommend["fallback_during_outage"] > 0  # answered without Redis, not by luck

    events = result["events"]
    assert events["accepted"] > 0
    assert events["lost"] == 0, events["lost_examples"]
    assert events["by_phase_and_status"]["outage"].get("503", 0) > 0  # refused, not swallowed
    assert events["by_phase_and_status"]["after"].get("202", 0) > 0  # and accepted again

    assert result["breaker"]["opened_after_kill_s"] is not None
    assert result["breaker"]["closed_after_restart_s"] is not None


def test_a_master_killed_under_load_loses_no_event_and_fails_no_recommend(
    bundle: Path, tmp_path: Path
) -> None:
    """loadtest/chaos_cluster.py, short: a cluster master SIGKILLed, its replica takes over."""
    out = tmp_path / "chaos-cluster.json"
    done = drill(
        "chaos_cluster.py", "--bundle", str(bundle), "--warmup", "3", "--after", "4",
        "--recommend-rps", "80", "--events-rps", "30", "--connections", "4", "--json", str(out),
    )  # fmt: skip
    print(done.stdout, done.stderr)
    assert done.returncode in (0, 1)  # 1: a timing target missed on a busy machine
    result = json.loads(out.read_text())
    assert result["recommend"]["requests"] > 100
    assert result["recommend"]["non_2xx"] == 0
    events = result["events"]
    assert events["accepted"] > 0
    assert events["lost"] == 0, events["lost_examples"]
    assert events["by_phase_and_status"]["after"].get("202", 0) > 0  # accepted again
    assert 0.5 < result["failover"]["takeover_after_kill_s"] < 30  # a real failover happened


def test_a_short_overload_sheds_with_retry_after_and_stops_after(
    bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "overload.json"
    done = drill(
        "overload.py", "--bundle", str(bundle), "--duration", "3", "--unloaded-seconds", "2",
        "--overload-connections", "64", "--probe-rps", "50", "--json", str(out),
    )  # fmt: skip
    print(done.stdout, done.stderr)
    assert done.returncode in (0, 1)  # 1: a latency target missed on a busy machine
    result = json.loads(out.read_text())
    over = result["overload"]
    assert over["sent_multiple"] > 1.5  # the flood did exceed capacity
    assert over["shed"] > 0 and over["shed_by_reason"]["inflight"] == over["shed"]
    assert over["shed_with_retry_after"]
    assert over["other_statuses"] == []  # 200 or 503, nothing else
    assert result["accepted_probe"]["count"] > 0  # the limit still admits
    assert result["after_load"] == {
        "seconds": 10.0, "probe_503": 0, "sheds": 0.0, "probe_non_2xx": 0,
    }  # fmt: skip


def test_nonsense_arguments_are_refused_before_anything_starts() -> None:
    done = drill("chaos_redis.py", "--outage", "0")
    assert done.returncode == 2
    assert "--outage must be positive" in done.stderr


@pytest.mark.parametrize(
    ("script", "args", "says"),
    [
        ("overload.py", ["--url", "http://10.0.0.1:80"], "drills stay on loopback"),
        ("overload.py", ["--overload-connections", "1"], "at least 2"),
        ("soak.py", ["--minutes", "0"], "must be positive"),
        ("soak.py", ["--minutes", "0.1", "--interval", "10"], "at least two samples"),
    ],
)
def test_the_other_drills_refuse_nonsense_arguments(
    script: str, args: list[str], says: str
) -> None:
    done = drill(script, *args)
    assert done.returncode == 2
    assert says in done.stderr


@pytest.mark.parametrize("script", ["chaos_redis.py", "overload.py", "soak.py"])
def test_a_missing_bundle_fails_at_once_with_the_reason(script: str, tmp_path: Path) -> None:
    done = drill(script, "--bundle", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert "is not a readable Duet bundle" in done.stderr
