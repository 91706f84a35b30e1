"""GET /v1/items/{item_id}/complementary and POST /v1/retrieve with "relation": "complementary":
IN.OUT through the bundle's second index, the filters and exclusions of similar, a user's seen
set, arms, metrics, bad input, and the fallback to similar items (no dual embeddings)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest_asyncio

from service.api.schemas import MAX_BASKET
from service.experiments import Assigner, load_experiment
from service.settings import Settings
from tests.service.api.helpers import items, metric, users, version
from tests.service.conftest import serve
from tests.service.redis_server import RedisServer, free_port
from tests.service.test_admin import copy_bundle, settings_for, write_config


def _expected(bundle: Path, rows: list[int], k: int, excluded: set[int]) -> list[str]:
    """The exact IN.OUT ranking, straight from the bundle's arrays."""
    item_in = np.load(bundle / "item_in.npy")
    item_out = np.load(bundle / "item_out.npy")
    scores = (item_out @ item_in[rows].sum(axis=0)).astype(np.float64)
    scores[sorted(excluded)] = -np.inf
    catalog = items(bundle)
    return [catalog[r]["item_id"] for r in np.argsort(-scores, kind="stable")[:k]]


def _ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def _rehash(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = (bundle / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


async def test_complementary_items_rank_by_in_dot_out(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    item = items(bundle_dir)[5]["item_id"]
    response = await client.get(f"/v1/items/{item}/complementary", params={"k": 8})
    assert response.status_code == 200
    body = response.json()
    assert body["fallback"] is None
    assert body["arm"] == "default"
    assert body["model_version"] == version(bundle_dir)
    assert _ids(body) == _expected(bundle_dir, [5], 8, {5})
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_complementary_is_not_similar(client: httpx.AsyncClient, bundle_dir: Path) -> None:
    item = items(bundle_dir)[5]["item_id"]
    similar = (await client.get(f"/v1/items/{item}/similar", params={"k": 10})).json()
    complementary = (await client.get(f"/v1/items/{item}/complementary", params={"k": 10})).json()
    assert _ids(similar) != _ids(complementary)


async def test_an_unknown_item_is_404_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/items/no-such-item/complementary")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["field"] == "item_id"
    assert "no-such-item" in error["message"]
    basket = {"items": ["no-such-item"], "relation": "complementary"}
    response = await client.post("/v1/retrieve", json=basket)
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "items"
    assert "no-such-item" in response.json()["error"]["message"]


async def test_k_out_of_range_is_422(client: httpx.AsyncClient, bundle_dir: Path) -> None:
    item = items(bundle_dir)[5]["item_id"]
    for k in (0, 501, "ten"):
        response = await client.get(f"/v1/items/{item}/complementary", params={"k": k})
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "k"


@pytest_asyncio.fixture
async def patient(bundle_dir: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Generous Redis deadlines: these tests need the seen set, even on a busy machine."""
    settings = Settings(bundle=bundle_dir, redis_url=redis_url, redis_timeout_ms=2_000)
    async with serve(settings) as (_, http):
        yield http


async def test_a_user_id_leaves_out_what_that_user_has_seen(
    patient: httpx.AsyncClient, bundle_dir: Path
) -> None:
    client = patient
    item = items(bundle_dir)[5]["item_id"]
    top = _ids((await client.get(f"/v1/items/{item}/complementary", params={"k": 5})).json())
    events = [{"user_id": "shopper", "item_id": i, "type": "dislike"} for i in top[:3]]
    assert (await client.post("/v1/events", json=events)).status_code == 202
    params = {"k": 5, "user_id": "shopper"}
    mine = (await client.get(f"/v1/items/{item}/complementary", params=params)).json()

    assert mine["fallback"] is None
    assert not set(top[:3]) & set(_ids(mine))
    assert _ids(mine)[:2] == top[3:5]
    body = {"item_id": item, "relation": "complementary", "user_id": "shopper", "k": 5}
    by_body = (await client.post("/v1/retrieve", json=body)).json()
    assert _ids(by_body) == _ids(mine)


async def test_a_basket_sums_its_in_vectors_and_is_left_out(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    catalog = items(bundle_dir)
    basket = [catalog[r]["item_id"] for r in (3, 8, 13)]
    body = {"items": basket, "relation": "complementary", "k": 10}
    response = await client.post("/v1/retrieve", json=body)
    assert response.status_code == 200
    assert response.json()["fallback"] is None
    assert _ids(response.json()) == _expected(bundle_dir, [3, 8, 13], 10, {3, 8, 13})


async def test_filters_apply_as_for_similar(client: httpx.AsyncClient, bundle_dir: Path) -> None:
    catalog = items(bundle_dir)
    genre = catalog[0]["genres"][0]
    body = {
        "item_id": catalog[5]["item_id"],
        "relation": "complementary",
        "k": 5,
        "filters": {"genres_any": [genre]},
    }
    response = await client.post("/v1/retrieve", json=body)
    assert response.status_code == 200
    found = response.json()["items"]
    assert len(found) == 5
    assert all(genre in i["genres"] for i in found)


async def test_a_basket_over_the_limit_is_422_naming_it(client: httpx.AsyncClient) -> None:
    body = {"items": ["1"] * (MAX_BASKET + 1), "relation": "complementary"}
    response = await client.post("/v1/retrieve", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "items"
    assert str(MAX_BASKET) in error["message"]


async def test_complementary_needs_items(client: httpx.AsyncClient) -> None:
    body = {"history": ["1"], "relation": "complementary"}
    response = await client.post("/v1/retrieve", json=body)
    assert response.status_code == 422
    assert "item_id or items" in response.json()["error"]["message"]


async def test_lane_and_route_answer_alike_and_are_counted_by_endpoint(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    item = items(bundle_dir)[9]["item_id"]
    before = (await client.get("/metrics")).text
    lane = await client.get(f"/v1/items/{item}/complementary", params={"k": 4})
    # an unexpected parameter is left to FastAPI, which ignores it
    route = await client.get(f"/v1/items/{item}/complementary", params={"k": 4, "x": "1"})
    basket = {"items": [item], "relation": "complementary", "k": 4}
    by_body = await client.post("/v1/retrieve", json=basket)
    after = (await client.get("/metrics")).text
    assert lane.status_code == route.status_code == by_body.status_code == 200
    assert _ids(lane.json()) == _ids(route.json()) == _ids(by_body.json())
    name = "duet_related_requests_total"
    get = {"endpoint": "/v1/items/{item_id}/complementary", "relation": "complementary"}
    post = {"endpoint": "/v1/retrieve", "relation": "complementary"}
    assert metric(after, name, **get) - metric(before, name, **get) == 2
    assert metric(after, name, **post) - metric(before, name, **post) == 1
    http = {"route": "/v1/items/{item_id}/complementary", "method": "GET", "status": "200"}
    requests = "duet_http_requests_total"
    assert metric(after, requests, **http) - metric(before, requests, **http) == 2


async def test_the_openapi_schema_declares_both(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    get = schema["paths"]["/v1/items/{item_id}/complementary"]["get"]
    assert {p["name"] for p in get["parameters"]} >= {"item_id", "k", "user_id"}
    assert "404" in get["responses"]
    retrieve = schema["components"]["schemas"]["RetrieveRequest"]["properties"]
    assert retrieve["relation"]["enum"] == ["similar", "complementary"]
    assert retrieve["items"]["anyOf"][0]["maxItems"] == MAX_BASKET


@pytest_asyncio.fixture
async def without_dual(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The tiny bundle as a build with --no-complementary writes it."""
    copy = tmp_path / "plain"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["complementary"] = None
    for name in ("item_in.npy", "item_out.npy", "complementary.faiss"):
        del manifest["files"][name]
        (copy / name).unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    async with serve(Settings(bundle=copy, redis_url=redis_url)) as (_, http):
        yield http


async def test_a_bundle_without_dual_embeddings_falls_back_to_similar(
    without_dual: httpx.AsyncClient, bundle_dir: Path
) -> None:
    client = without_dual
    item = items(bundle_dir)[5]["item_id"]
    before = (await client.get("/metrics")).text
    response = await client.get(f"/v1/items/{item}/complementary", params={"k": 6})
    after = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert response.json()["fallback"] == "no_dual_embeddings"
    similar = (await client.get(f"/v1/items/{item}/similar", params={"k": 6})).json()
    assert _ids(response.json()) == _ids(similar)
    reason = {"reason": "no_dual_embeddings"}
    name = "duet_fallbacks_total"
    assert metric(after, name, **reason) - metric(before, name, **reason) == 1
    catalog = items(bundle_dir)
    basket = {"items": [catalog[3]["item_id"], catalog[8]["item_id"]], "relation": "complementary"}
    by_basket = (await client.post("/v1/retrieve", json=basket)).json()
    assert by_basket["fallback"] == "no_dual_embeddings"
    assert not {catalog[3]["item_id"], catalog[8]["item_id"]} & set(_ids(by_basket))
    assert len(by_basket["items"]) == 10


async def test_an_item_without_vectors_falls_back_to_similar(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "cold-item"
    shutil.copytree(bundle_dir, copy)
    item_in = np.load(copy / "item_in.npy")
    item_in[5] = 0.0  # as a live-catalog item has until a compaction
    np.save(copy / "item_in.npy", item_in)
    _rehash(copy, "item_in.npy")
    catalog = items(bundle_dir)
    async with serve(Settings(bundle=copy, redis_url=redis_url)) as (_, client):
        item = catalog[5]["item_id"]
        response = (await client.get(f"/v1/items/{item}/complementary", params={"k": 6})).json()
        similar = (await client.get(f"/v1/items/{item}/similar", params={"k": 6})).json()
        assert response["fallback"] == "item_without_dual_embedding"
        assert _ids(response) == _ids(similar)
        # in a basket, an item without vectors is left out of the sum, not of the exclusions
        basket = {"items": [item, catalog[8]["item_id"]], "relation": "complementary", "k": 5}
        mixed = (await client.post("/v1/retrieve", json=basket)).json()
        assert mixed["fallback"] is None
        assert _ids(mixed) == _expected(copy, [8], 5, {5, 8})


async def test_a_named_user_is_served_by_their_arm(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    shutil.copytree(bundle_dir, tmp_path / "v1")
    copy_bundle(bundle_dir, tmp_path / "v2", "tiny-v2")
    config = write_config(tmp_path / "experiment.toml")
    assigner = Assigner(load_experiment(config))
    item = items(bundle_dir)[5]["item_id"]
    async with serve(settings_for(config, redis_url)) as (_, client):
        arms = set()
        for user in users(bundle_dir)[:20]:
            params: dict[str, str | int] = {"k": 3, "user_id": user}
            body = (await client.get(f"/v1/items/{item}/complementary", params=params)).json()
            assert body["arm"] == assigner.assign(user)
            expected = {"control": version(bundle_dir), "popular": "tiny-v2"}[body["arm"]]
            assert body["model_version"] == expected
            arms.add(body["arm"])
        assert arms == {"control", "popular"}
        anonymous = (await client.get(f"/v1/items/{item}/complementary")).json()
        assert anonymous["arm"] in {"control", "popular"}


async def test_without_the_store_a_user_id_is_served_and_says_so(bundle_dir: Path) -> None:
    server = RedisServer(free_port()).start()
    settings = Settings(
        bundle=bundle_dir, redis_url=server.url, redis_timeout_ms=30, breaker_failures=2,
        breaker_cooldown_seconds=60,
    )  # fmt: skip
    item = items(bundle_dir)[5]["item_id"]
    try:
        async with serve(settings) as (_, client):
            server.stop()
            for _ in range(3):  # through failures, then with the breaker open
                params: dict[str, str | int] = {"k": 6, "user_id": "shopper"}
                response = await client.get(f"/v1/items/{item}/complementary", params=params)
                assert response.status_code == 200
                assert response.json()["fallback"] == "store_unavailable"
                assert _ids(response.json()) == _expected(bundle_dir, [5], 6, {5})
    finally:
        server.stop()
