"""`python -m service` with two workers: metrics aggregate across both processes, and an admin
reload reaches both."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.api.helpers import metric, users
from tests.service.live_server import running_service
from tests.service.redis_server import RedisServer
from tests.service.test_admin import AUTH, TOKEN
from tests.service.test_broadcast import with_version, write_config

PARALLEL = 8
MAX_REQUESTS = 2_000


def test_two_workers_share_one_metrics_view(
    bundle_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus"
    env = {
        "DUET_BUNDLE": str(bundle_dir),
        "DUET_REDIS_URL": redis_server.url,
        "DUET_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    user = users(bundle_dir)[0]
    with running_service(env) as url:
        # the kernel picks the worker per connection: send fresh connections in parallel until
        # both workers have served some, then check that /metrics counts every one of them
        sent = 0
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, limits=no_keepalive, timeout=5) as client:

            def recommend(_: int) -> int:
                return client.post("/v1/recommend", json={"user_id": user}).status_code

            with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
                while sent < MAX_REQUESTS and len(_counter_pids(metrics_dir)) < 2:
                    assert set(pool.map(recommend, range(PARALLEL))) == {200}
                    sent += PARALLEL
            text = client.get("/metrics").text
        assert len(_counter_pids(metrics_dir)) == 2  # both workers wrote their own counters
        served = metric(
            text, "duet_http_requests_total", route="/v1/recommend", status="200", arm="default"
        )
        assert served == sent


def _counter_pids(metrics_dir: Path) -> set[str]:
    return {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}


def test_the_command_serves_with_the_early_shedding_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    from service import __main__ as command
    from service.api.early_shed import EarlySheddingProtocol

    seen: dict[str, Any] = {}
    monkeypatch.setattr(command.uvicorn, "run", lambda *_, **kw: seen.update(kw))
    monkeypatch.setenv("DUET_WORKERS", "1")
    command.main()
    http = seen["http"]
    assert import_from_string(HTTP_PROTOCOLS.get(http, http)) is EarlySheddingProtocol
    assert (seen["loop"], seen["factory"]) == ("uvloop", True)


def test_a_reload_through_the_command_reaches_both_workers(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """`python -m service` with DUET_WORKERS=2, whatever the process model: one admin reload,
    then every worker (fresh connections, spread by the kernel) serves the new version."""
    with_version(bundle_dir, tmp_path / "v1", "cmd-v1")
    with_version(bundle_dir, tmp_path / "v2", "cmd-v2")
    config = tmp_path / "experiment.toml"
    write_config(config, "v1")
    metrics_dir = tmp_path / "prometheus"
    env = {
        "DUET_EXPERIMENTS": str(config),
        "DUET_REDIS_URL": redis_url,
        "DUET_WORKERS": "2",
        "DUET_ADMIN_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with (
        running_service(env) as url,
        httpx.Client(base_url=url, limits=no_keepalive, timeout=5) as client,
        ThreadPoolExecutor(max_workers=PARALLEL) as pool,
    ):

        def arm_b(_: int) -> str:
            response = client.get("/readyz")
            assert response.status_code == 200
            return str(response.json()["arms"]["b"])

        deadline = time.monotonic() + 30
        while len(_counter_pids(metrics_dir)) < 2:  # both workers up and answering
            assert time.monotonic() < deadline, "the second worker never answered"
            assert set(pool.map(arm_b, range(PARALLEL))) == {"cmd-v1"}
        write_config(config, "v2")
        reload = client.post("/admin/bundles/reload", headers=AUTH)
        assert reload.status_code == 200, reload.text
        streak = 0
        deadline = time.monotonic() + 20
        while streak < 64:  # 64 fresh connections in a row all on v2: both workers reloaded
            assert time.monotonic() < deadline, "a worker kept the old bundle"
            answers = list(pool.map(arm_b, range(PARALLEL)))
            streak = streak + len(answers) if set(answers) == {"cmd-v2"} else 0
            time.sleep(0.01)
