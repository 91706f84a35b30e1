"""The consistency promise with two workers (`python -m service`, DUET_WORKERS=2) on a real Redis.

A DELETE or hide that returned 2xx (answered by one worker) is never served by either worker
afterwards; an upsert is retrievable in both at once (the promise is within 1 s). Fresh
connections, so the kernel spreads the requests over both workers.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from service.catalog.bundle import load_bundle
from service.catalog.live import LiveItem
from tests.service.api.helpers import users
from tests.service.live_server import running_service
from tests.service.test_admin import AUTH, TOKEN
from tests.service.test_main import _counter_pids

PARALLEL = 8
AFTER = 400  # requests per check after the change, over both workers


def test_two_workers_never_serve_a_deleted_or_hidden_item_and_see_an_upsert_at_once(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus"
    env = {
        "DUET_BUNDLE": str(bundle_dir),
        "DUET_REDIS_URL": redis_url,
        "DUET_WORKERS": "2",
        "DUET_ADMIN_TOKEN": TOKEN,
        "DUET_REDIS_TIMEOUT_MS": "1000",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    user = users(bundle_dir)[7]
    new = LiveItem("live-42", "Tomorrow's Film (2032)", ("Drama",), 2032)
    query = [float(x) for x in load_bundle(bundle_dir).items.embed([new])[0]]
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with (
        running_service(env) as url,
        httpx.Client(base_url=url, limits=no_keepalive, timeout=5) as client,
        ThreadPoolExecutor(max_workers=PARALLEL) as pool,
    ):

        def page(_: int) -> list[str]:
            response = client.post("/v1/recommend", json={"user_id": user, "k": 10})
            assert response.status_code == 200, response.text
            return [i["item_id"] for i in response.json()["items"]]

        def retrieved(_: int) -> list[str]:
            response = client.post("/v1/retrieve", json={"embedding": query, "k": 10})
            assert response.status_code == 200, response.text
            return [i["item_id"] for i in response.json()["items"]]

        deadline = time.monotonic() + 30
        while len(_counter_pids(metrics_dir)) < 2:  # both workers up and answering
            assert time.monotonic() < deadline, "the second worker never answered"
            list(pool.map(page, range(PARALLEL)))

        first = page(0)
        doomed, hidden = first[0], first[1]
        assert client.delete(f"/admin/items/{doomed}", headers=AUTH).status_code == 200
        patch = client.patch(f"/admin/items/{hidden}", json={"available": False}, headers=AUTH)
        assert patch.status_code == 200
        pages = list(pool.map(page, range(AFTER)))
        assert all(doomed not in p and hidden not in p and len(p) == 10 for p in pages)

        started = time.monotonic()
        body = {"item_id": new.item_id, "title": new.title, "genres": ["Drama"], "year": 2032}
        assert client.post("/admin/items", json=body, headers=AUTH).status_code == 200
        found = list(pool.map(retrieved, range(AFTER)))
        assert all(items[0] == new.item_id for items in found)
        assert time.monotonic() - started < 10  # AFTER requests; each saw the item at once
        assert client.get(f"/v1/items/{new.item_id}").status_code == 200
