"""The service container's command, outside Docker: ready, healthy by the image's own check,
serving with the compose file's settings (two workers, real Redis) and exporting metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from tests.ops.test_dockerfiles import healthcheck_argv
from tests.service.redis_server import free_port

RECOMMENDS = re.compile(
    r'^duet_http_requests_total\{[^}]*route="/v1/recommend"[^}]*\} (\S+)$', re.MULTILINE
)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable if a == "python" else a for a in healthcheck_argv()]
    return subprocess.run(
        argv, env={**os.environ, "DUET_PORT": str(port)}, capture_output=True, text=True,
        timeout=10, check=False,
    )  # fmt: skip


def test_the_image_healthcheck_passes_against_the_running_service(service_port: int) -> None:
    done = run_healthcheck(service_port)
    assert done.returncode == 0, done.stderr


def test_the_image_healthcheck_fails_when_nothing_listens() -> None:
    done = run_healthcheck(free_port())
    assert done.returncode != 0
    assert "Connection refused" in done.stderr


def test_readyz_reports_the_real_redis_store(service_port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{service_port}/readyz", timeout=5) as resp:
        body = resp.read().decode()
    assert "redis" in body


def test_metrics_aggregate_the_workers_after_traffic(service_port: int) -> None:
    base = f"http://127.0.0.1:{service_port}"
    for user in ("1", "2", "3", "4"):
        request = urllib.request.Request(  # noqa: S310
            f"{base}/v1/recommend", data=json.dumps({"user_id": user, "k": 5}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            assert json.loads(resp.read())["arm"]
    # A request is counted as its last byte leaves, so the count may trail the client briefly.
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:  # noqa: S310
            exposed = resp.read().decode()
        served = sum(float(v) for v in RECOMMENDS.findall(exposed))
        if served >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert served >= 4, exposed
    assert re.search(r"^duet_bundle_info\{.*\} 1\.0$", exposed, re.M)
