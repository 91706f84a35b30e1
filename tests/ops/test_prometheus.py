"""A real Prometheus (the Debian `prometheus` binary, `make prometheus`) scraping the live
two-arm service of the session; every PromQL expression of the Grafana dashboard is then
evaluated through Prometheus's HTTP API and must return data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from loadtest.traffic import Shown, Traffic, load_catalog
from tests.ops.conftest import OPS_ADMIN_TOKEN, REPO
from tests.ops.test_observability import dashboard
from tests.service.redis_server import free_port

SCRAPE_SECONDS = 1
RATE_WINDOW = "15s"  # stands in for Grafana's $__rate_interval: several 1 s scrapes


def dashboard_expressions() -> list[str]:
    exprs = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def as_prometheus(expr: str) -> str:
    """Grafana's variables as Prometheus sees them with the dashboard's defaults (All arms)."""
    return (
        expr.replace("$__rate_interval", RATE_WINDOW)
        .replace("$__range", "5m")
        .replace("$arm", ".*")
    )


def query(base: str, expr: str) -> list[Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback http)
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def prometheus(service_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no prometheus binary: run `make prometheus` (apt-get install prometheus)")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((REPO / "docker" / "prometheus.yml").read_text())
    port = free_port()
    config["global"] |= {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": "1s"}
    for job in config["scrape_configs"]:
        target = f"127.0.0.1:{service_port}" if job["job_name"] == "duet" else f"127.0.0.1:{port}"
        job["static_configs"] = [{"targets": [target]}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1):  # noqa: S310
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text()[-2000:]) from None
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def drive(port: int, bundle: Path, seconds: float) -> None:
    """Every kind of request the dashboard shows: both arms, clicks, 4xx, a reload, similar and
    complementary items."""
    traffic = Traffic(load_catalog(bundle), zipf_s=1.1, new_user_share=0.2, seed=7)
    auth = {"Authorization": f"Bearer {OPS_ADMIN_TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        reload = http.post("/admin/bundles/reload", headers=auth)
        assert reload.status_code == 200, reload.text
        assert http.get("/v1/items/no-such-item/similar").status_code == 404
        assert http.post("/v1/recommend", json={"user_id": ""}).status_code == 422
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            body = traffic.recommend_body()
            answer = http.post("/v1/recommend", json=body)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            ids = tuple(i["item_id"] for i in page["items"])
            traffic.remember(body["user_id"], Shown(page.get("request_id", ""), ids))
            http.post("/v1/events", json=traffic.event_body())
            http.get(traffic.similar_path())
            http.get(traffic.similar_path().replace("/similar", "/complementary"))
            http.post("/v1/retrieve", json=traffic.retrieve_body())


def test_every_dashboard_query_returns_data(
    prometheus: str, service_port: int, bundle: Path
) -> None:
    drive(service_port, bundle, seconds=12)
    time.sleep(3 * SCRAPE_SECONDS)
    empty = [e for e in dashboard_expressions() if not query(prometheus, as_prometheus(e))]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
