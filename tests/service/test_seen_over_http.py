"""Issue 14's target over a real socket: `python -m service` with two workers and a real Redis.

A user whose 1,000 interactions (380 distinct items, most of them far outside the tower's
200-item window) arrive as events is never recommended any of them, by either worker, on the
page memo's first and later answers; `k` items still come back whenever `k` qualify.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.service.api.helpers import items
from tests.service.live_server import running_service
from tests.service.test_main import _counter_pids

PARALLEL = 4


def test_a_thousand_interactions_posted_as_events_are_never_served(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus"
    env = {
        "DUET_BUNDLE": str(bundle_dir),
        "DUET_REDIS_URL": redis_url,
        "DUET_WORKERS": "2",
        "DUET_REDIS_TIMEOUT_MS": "1000",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    catalog = [item["item_id"] for item in items(bundle_dir)]
    seen = set(catalog[:380])
    events = [
        {"user_id": "heavy-socket", "item_id": catalog[n % 380], "type": "view", "timestamp": n}
        for n in range(1_000)
    ]
    no_keepalive = httpx.Limits(max_keepalive_connections=0)  # the kernel spreads the workers
    with (
        running_service(env) as url,
        httpx.Client(base_url=url, limits=no_keepalive, timeout=5) as client,
        ThreadPoolExecutor(max_workers=PARALLEL) as pool,
    ):

        def page(k: int) -> set[str]:
            response = client.post("/v1/recommend", json={"user_id": "heavy-socket", "k": k})
            assert response.status_code == 200, response.text
            return {i["item_id"] for i in response.json()["items"]}

        deadline = time.monotonic() + 30
        while len(_counter_pids(metrics_dir)) < 2:
            assert time.monotonic() < deadline, "the second worker never answered"
            list(pool.map(page, [5] * PARALLEL))

        assert client.post("/v1/events", json=events).status_code == 202
        sizes = [5, 10, 20] * 40  # the bundle has 400 items: exactly 20 are left unseen
        pages = list(pool.map(page, sizes))
        assert [len(p) for p in pages] == sizes
        assert not set().union(*pages) & seen
        assert all(p == set(catalog[380:]) for p, k in zip(pages, sizes, strict=True) if k == 20)
