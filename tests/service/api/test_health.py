"""Liveness, readiness (only with a verified bundle) and the metrics endpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.service.api.helpers import metric, users, version
from tests.service.conftest import serve


async def test_ready_with_a_verified_bundle_and_redis(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "arms": {"default": version(bundle_dir)},
        "store": {"backend": "redis", "state": "up"},
    }


async def test_a_corrupt_bundle_leaves_the_app_alive_but_not_ready(
    bundle_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (bundle_copy / "user_ids.npy").write_bytes(b"tampered")
    with caplog.at_level(logging.ERROR, logger="service"):
        async with serve(Settings(bundle=bundle_copy)) as (_, client):
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "user_ids.npy: " in ready.json()["reason"]
            refused = await client.post("/v1/recommend", json={"user_id": "1"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "not_ready"
    assert any("not ready: bundle" in r.getMessage() for r in caplog.records)


async def test_no_bundle_configured_is_not_ready() -> None:
    async with serve(Settings()) as (_, client):
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "DUET_BUNDLE is not set"


async def test_embedded_store_serves_without_redis(bundle_dir: Path) -> None:
    async with serve(Settings(bundle=bundle_dir)) as (app, client):
        ready = (await client.get("/readyz")).json()
        assert ready["store"] == {"backend": "local", "state": "up"}
        user = users(bundle_dir)[0]
        first = (await client.post("/v1/recommend", json={"user_id": user, "k": 5})).json()
        item = first["items"][0]["item_id"]
        event = {"user_id": user, "item_id": item, "type": "click"}
        assert (await client.post("/v1/events", json=event)).status_code == 202
        await app.state.recommender.drain()
        after = (await client.post("/v1/recommend", json={"user_id": user, "k": 5})).json()
        assert item not in {i["item_id"] for i in after["items"]}


async def test_request_metrics_use_route_templates_and_arms(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    before = (await client.get("/metrics")).text
    await client.get("/v1/items/no-such-item/similar")
    await client.post("/v1/recommend", json={"user_id": users(bundle_dir)[0]})
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = "/v1/items/{item_id}/similar"
    for labels, delta in (
        ({"route": route, "method": "GET", "status": "404", "arm": "default"}, 1),
        ({"route": "/v1/recommend", "method": "POST", "status": "200", "arm": "default"}, 1),
    ):
        name = "duet_http_requests_total"
        assert metric(after, name, **labels) - metric(before, name, **labels) == delta
    assert "no-such-item" not in after
    assert metric(after, "duet_bundle_info", arm="default", version=version(bundle_dir)) == 1
    assert 'duet_http_request_duration_seconds_bucket{arm="default",le="0.00025"' in after
    assert 'duet_stage_duration_seconds_count{stage="encode"}' in after
