"""The local stack without Docker: the containers' own commands, run as processes.

One session builds a bundle the way the trainer container does (its entrypoint, on a tiny
synthetic dataset), starts the service the way the service container does (the compose file's
command and environment, with a free loopback port and a real redis-server), and every ops
test talks to those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "trainer-entrypoint.sh"


OPS_ADMIN_TOKEN = "ops-admin-token-0123456789"  # noqa: S105 (a test secret)


def compose_file() -> dict[str, Any]:
    with (REPO / "docker-compose.yml").open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def run_entrypoint(env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The trainer container's entrypoint, outside Docker, with `python` = this interpreter."""
    return subprocess.run(
        ["sh", str(ENTRYPOINT)],
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    subprocess.run(
        [sys.executable, "-m", "models", "synth", "--items", "300", "--users", "200", "--out",
         str(out)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out


def trainer_env(volume: Path, data: Path) -> dict[str, str]:
    """The compose file's trainer environment, pointed at a temp volume and a tiny dataset."""
    env = {k: str(v) for k, v in compose_file()["services"]["trainer"]["environment"].items()}
    env["DUET_BUNDLE"] = str(volume / Path(env["DUET_BUNDLE"]).relative_to("/bundles"))
    env["DUET_TRAIN_DATASET"] = "synth"
    env["DUET_TRAIN_DATA_DIR"] = str(data)
    env["DUET_TRAIN_ARGS"] = "--epochs 1 --no-baselines --no-progress"
    return env


@pytest.fixture(scope="session")
def trainer_volume(tmp_path_factory: pytest.TempPathFactory, synth_data: Path) -> Path:
    """The `bundles` volume after the trainer container ran once."""
    volume = tmp_path_factory.mktemp("volume")
    done = run_entrypoint(trainer_env(volume, synth_data))
    assert done.returncode == 0, done.stdout + done.stderr
    return volume


@pytest.fixture(scope="session")
def bundle(trainer_volume: Path) -> Path:
    path = trainer_volume / "demo"
    assert (path / "manifest.json").is_file()
    return path


@pytest.fixture(scope="session")
def ops_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port()).start()
    yield server
    server.stop()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    pytest.fail(f"service not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def mounted_copy(
    spec: dict[str, Any], container_path: str, into: Path, rewrite: dict[str, str]
) -> Path:
    """The repo file a compose bind mount puts at `container_path`, with container paths
    rewritten to where this machine has them."""
    for volume in spec["volumes"]:
        source, target, *_ = volume.split(":")
        if target == container_path and source.startswith("./"):
            text = (REPO / source).read_text(encoding="utf-8")
            for old, new in rewrite.items():
                text = text.replace(old, new)
            copy = into / Path(container_path).name
            copy.write_text(text, encoding="utf-8")
            return copy
    raise AssertionError(f"no bind mount of a repo file at {container_path}")


@pytest.fixture(scope="session")
def service_port(
    bundle: Path, ops_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The service container's command and environment, outside Docker, on a free port."""
    spec = compose_file()["services"]["service"]
    argv = [sys.executable if arg == "python" else arg for arg in spec["command"]]
    env = {k: str(v) for k, v in spec["environment"].items() if v is not None}
    port = free_port()
    env |= {
        "DUET_BUNDLE": str(bundle),
        "DUET_REDIS_URL": ops_redis.url,
        "DUET_HOST": "127.0.0.1",
        "DUET_PORT": str(port),
        # The default 50 ms is meant for a dedicated host; on a CI box whose two cores are
        # shared with the load generator and other jobs, Redis calls queue behind the CPU and
        # time out, and events answer 503 by design. The smoke run checks traffic, not that.
        "DUET_REDIS_TIMEOUT_MS": "500",
        "DUET_ADMIN_TOKEN": OPS_ADMIN_TOKEN,  # the load test samples its ids through /admin
    }
    workdir = tmp_path_factory.mktemp("service")
    if "DUET_EXPERIMENTS" in env:
        env["DUET_EXPERIMENTS"] = str(
            mounted_copy(spec, env["DUET_EXPERIMENTS"], workdir, {"/bundles/": f"{bundle.parent}/"})
        )
    log = workdir / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log, timeout=120)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
