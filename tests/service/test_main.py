"""`python -m service` with two uvicorn workers: metrics aggregate across both processes."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.service.api.helpers import metric, users
from tests.service.live_server import running_service
from tests.service.redis_server import RedisServer

REQUESTS = 40


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
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, limits=no_keepalive, timeout=5) as client:
            for _ in range(REQUESTS):
                response = client.post("/v1/recommend", json={"user_id": user})
                assert response.status_code == 200
            text = client.get("/metrics").text
        served = metric(
            text, "duet_http_requests_total", route="/v1/recommend", status="200", arm="default"
        )
        assert served == REQUESTS
        pids = {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2  # both workers wrote their own counters
