"""The fast lane (recommend, retrieve, similar) answers exactly as the FastAPI routes do."""

from __future__ import annotations

from pathlib import Path

import httpx

from service.settings import Settings
from tests.service.api.helpers import items, metric, users
from tests.service.conftest import serve

JSON, VENDOR = "application/json", "application/vnd.duet+json"
ROUTE = {"route": "/v1/recommend", "method": "POST", "status": "200", "arm": "default"}


async def test_lane_and_route_give_the_same_page(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[1]
    body = b'{"user_id": "%s", "k": 6}' % user.encode()
    before = (await client.get("/metrics")).text
    # application/json takes the lane; FastAPI also parses other JSON media types itself
    lane = await client.post(
        "/v1/recommend", content=body, headers={"content-type": "application/json"}
    )
    vendor = {"content-type": "application/vnd.duet+json"}
    plain = await client.post("/v1/recommend", content=body, headers=vendor)
    after = (await client.get("/metrics")).text
    assert lane.status_code == plain.status_code == 200
    assert lane.headers["content-type"] == plain.headers["content-type"] == "application/json"
    assert lane.json()["items"] == plain.json()["items"]
    assert lane.json()["request_id"] != plain.json()["request_id"]
    name = "duet_http_requests_total"
    assert metric(after, name, **ROUTE) - metric(before, name, **ROUTE) == 2


async def test_invalid_bodies_get_fastapis_answer(client: httpx.AsyncClient) -> None:
    json = {"content-type": "application/json"}
    bad_k = await client.post("/v1/recommend", content=b'{"user_id": "1", "k": 0}', headers=json)
    assert bad_k.status_code == 422
    assert bad_k.json()["error"]["field"] == "k"
    broken = await client.post("/v1/recommend", content=b'{"user_id": ', headers=json)
    assert broken.status_code == 422
    assert broken.json()["error"]["field"] == "body"


async def test_errors_while_serving_use_the_one_mapping(tmp_path: Path) -> None:
    async with serve(Settings(bundle=tmp_path / "missing")) as (_, client):
        response = await client.post("/v1/recommend", json={"user_id": "1"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "not_ready"


async def test_an_event_retires_the_memoised_page(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[2]
    app = client._transport.app  # type: ignore[attr-defined]
    first = (await client.post("/v1/recommend", json={"user_id": user, "k": 5})).json()
    await app.state.recommender.drain()
    again = (await client.post("/v1/recommend", json={"user_id": user, "k": 5})).json()
    assert again["items"] == first["items"]
    clicked = first["items"][0]["item_id"]
    event = {"user_id": user, "item_id": clicked, "type": "click"}
    assert (await client.post("/v1/events", json=event)).status_code == 202
    after = (await client.post("/v1/recommend", json={"user_id": user, "k": 5})).json()
    assert clicked not in {item["item_id"] for item in after["items"]}
    assert len(after["items"]) == 5


async def test_retrieve_and_similar_lanes_match_their_routes(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    item = items(bundle_dir)[3]["item_id"]
    body = b'{"item_id": "%s", "k": 5, "filters": {"year_min": 1900}}' % item.encode()
    lane = await client.post("/v1/retrieve", content=body, headers={"content-type": JSON})
    route = await client.post("/v1/retrieve", content=body, headers={"content-type": VENDOR})
    assert lane.status_code == route.status_code == 200
    assert lane.json()["items"] == route.json()["items"] and len(lane.json()["items"]) == 5
    # an extra query parameter leaves the lane: FastAPI ignores it and answers itself
    fast = await client.get(f"/v1/items/{item}/similar?k=4")
    slow = await client.get(f"/v1/items/{item}/similar?k=4&via=fastapi")
    assert fast.status_code == slow.status_code == 200
    assert fast.json()["items"] == slow.json()["items"] and len(fast.json()["items"]) == 4
    before = (await client.get("/metrics")).text
    await client.get(f"/v1/items/{item}/similar")
    after = (await client.get("/metrics")).text
    labels = {"route": "/v1/items/{item_id}/similar", "method": "GET", "status": "200"}
    name = "duet_http_requests_total"
    assert (
        metric(after, name, **labels, arm="default") - metric(before, name, **labels, arm="default")
        == 1
    )


async def test_similar_lane_errors_are_the_routes(client: httpx.AsyncClient) -> None:
    bad_k = await client.get("/v1/items/1/similar?k=0")
    assert bad_k.status_code == 422 and bad_k.json()["error"]["field"] == "k"
    unknown = await client.get("/v1/items/no-such-item/similar")
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "item_id"
    retrieve = await client.post(
        "/v1/retrieve", content=b'{"k": 3}', headers={"content-type": JSON}
    )
    assert retrieve.status_code == 422
