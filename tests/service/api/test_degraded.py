"""Redis stops in the middle: recommend keeps answering 200, events refuse with 503."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings
from tests.service.api.helpers import items, metric, users
from tests.service.conftest import serve
from tests.service.redis_server import RedisServer, free_port


async def test_redis_outage_degrades_recommend_and_refuses_events(bundle_dir: Path) -> None:
    server = RedisServer(free_port()).start()
    settings = Settings(
        bundle=bundle_dir, redis_url=server.url, redis_timeout_ms=30, breaker_failures=2,
        breaker_cooldown_seconds=60,
    )  # fmt: skip
    user = users(bundle_dir)[0]
    item = items(bundle_dir)[0]["item_id"]
    try:
        async with serve(settings) as (_, client):
            event = {"user_id": user, "item_id": item, "type": "click"}
            assert (await client.post("/v1/events", json=event)).status_code == 202
            healthy = await client.post("/v1/recommend", json={"user_id": user})
            assert healthy.json()["fallback"] is None

            server.stop()

            for _ in range(3):  # through failures, then with the breaker open
                response = await client.post(
                    "/v1/recommend", json={"user_id": user, "history": [item]}
                )
                assert response.status_code == 200
                body = response.json()
                assert body["fallback"] == "store_unavailable"
                assert len(body["items"]) == 10
                assert item not in {i["item_id"] for i in body["items"]}

            refused = await client.post("/v1/events", json=event)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            error = refused.json()["error"]
            assert error["code"] == "store_unavailable"
            assert "Redis" in error["message"]

            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["store"] == {"backend": "redis", "state": "breaker_open"}

            text = (await client.get("/metrics")).text
            assert metric(text, "duet_redis_breaker_open") == 1
            assert metric(text, "duet_events_rejected_total", reason="store_unavailable") >= 1
            assert metric(text, "duet_cache_requests_total", layer="redis", result="error") >= 3
    finally:
        server.stop()
