"""POST /v1/recommend and /v1/recommend/batch through the real app, bundle and Redis."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.settings import Settings
from tests.service.api.helpers import items, metric, users, version
from tests.service.conftest import serve


async def test_known_user_gets_k_personalised_items(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[0]
    response = await client.post("/v1/recommend", json={"user_id": user, "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["request_id", "user_id", "model_version", "arm", "items", "fallback"]
    assert body["user_id"] == user
    assert body["model_version"] == version(bundle_dir)
    assert body["arm"] == "default"
    assert body["fallback"] is None
    assert len(body["items"]) == 7
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    catalog = {item["item_id"]: item for item in items(bundle_dir)}
    for item in body["items"]:
        assert item["title"] == catalog[item["item_id"]]["title"]
        assert item["genres"] == catalog[item["item_id"]]["genres"]


async def test_unknown_user_without_history_gets_popularity(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    response = await client.post("/v1/recommend", json={"user_id": "stranger", "k": 5})
    body = response.json()
    assert response.status_code == 200
    assert body["fallback"] == "cold_start"
    popularity = json.loads((bundle_dir / "popularity.json").read_text())
    popular = [p["item_id"] for p in popularity]
    assert [i["item_id"] for i in body["items"]] == popular[:5]


async def test_unknown_user_with_request_history_gets_a_history_embedding(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    history = [item["item_id"] for item in items(bundle_dir)[:4]]
    response = await client.post(
        "/v1/recommend", json={"user_id": "session-1", "k": 10, "history": history}
    )
    body = response.json()
    assert body["fallback"] is None
    assert len(body["items"]) == 10
    assert not set(history) & {i["item_id"] for i in body["items"]}  # seen items excluded


async def test_exclusions_and_filters_still_fill_the_page(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[1]
    first = (await client.post("/v1/recommend", json={"user_id": user, "k": 20})).json()
    excluded = [i["item_id"] for i in first["items"][:15]]
    catalog = items(bundle_dir)
    genre = catalog[0]["genres"][0]
    eligible = [
        i["item_id"] for i in catalog if genre in i["genres"] and i["item_id"] not in excluded
    ]
    request = {
        "user_id": user,
        "k": 10,
        "exclude_item_ids": excluded,
        "filters": {"genres_any": [genre]},
    }
    body = (await client.post("/v1/recommend", json=request)).json()
    returned = [i["item_id"] for i in body["items"]]
    assert len(returned) == min(10, len(eligible))
    assert set(returned) <= set(eligible)


async def test_filter_admitting_fewer_than_k_returns_all_of_them(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    catalog = items(bundle_dir)
    year = next(i["year"] for i in catalog if i["year"])
    eligible = {i["item_id"] for i in catalog if i["year"] == year}
    request = {
        "user_id": users(bundle_dir)[2],
        "k": 500,
        "filters": {"year_min": year, "year_max": year},
    }
    body = (await client.post("/v1/recommend", json=request)).json()
    assert {i["item_id"] for i in body["items"]} == eligible


async def test_unknown_ids_are_ignored_and_counted(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    before = (await client.get("/metrics")).text
    request = {
        "user_id": users(bundle_dir)[3],
        "exclude_item_ids": ["no-such-item", "nope"],
        "history": ["ghost"],
    }
    response = await client.post("/v1/recommend", json=request)
    assert response.status_code == 200
    after = (await client.get("/metrics")).text
    for kind, count in (("exclude_item", 2), ("history_item", 1)):
        delta = metric(after, "duet_unknown_ids_total", kind=kind) - metric(
            before, "duet_unknown_ids_total", kind=kind
        )
        assert delta == count


async def test_second_request_hits_the_embedding_cache(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[4]
    first = (await client.post("/v1/recommend", json={"user_id": user})).json()
    client_app = client._transport.app  # type: ignore[attr-defined]
    await client_app.state.recommender.drain()
    before = (await client.get("/metrics")).text
    second = (await client.post("/v1/recommend", json={"user_id": user})).json()
    after = (await client.get("/metrics")).text
    hits = sum(
        metric(after, "duet_cache_requests_total", layer=layer, result="hit")
        - metric(before, "duet_cache_requests_total", layer=layer, result="hit")
        for layer in ("local", "redis")
    )
    assert hits == 1
    assert second["items"] == first["items"]
    # the same inputs again: the page itself is reused, no search
    memo = metric(after, "duet_page_memo_requests_total", result="hit") - metric(
        before, "duet_page_memo_requests_total", result="hit"
    )
    assert memo == 1


async def test_page_memo_size_zero_searches_every_time(bundle_dir: Path, redis_url: str) -> None:
    """DUET_PAGE_MEMO_SIZE=0: a repeat plain request is searched again, with the same page."""
    user = users(bundle_dir)[4]
    settings = Settings(bundle=bundle_dir, redis_url=redis_url, page_memo_size=0)
    async with serve(settings) as (app, client):
        first = (await client.post("/v1/recommend", json={"user_id": user})).json()
        await app.state.recommender.drain()
        before = (await client.get("/metrics")).text
        second = (await client.post("/v1/recommend", json={"user_id": user})).json()
        after = (await client.get("/metrics")).text
    assert second["items"] == first["items"]
    hits = metric(after, "duet_page_memo_requests_total", result="hit") - metric(
        before, "duet_page_memo_requests_total", result="hit"
    )
    assert hits == 0


async def test_batch_answers_in_order(client: httpx.AsyncClient, bundle_dir: Path) -> None:
    ids = [*users(bundle_dir)[:3], "stranger"]
    response = await client.post(
        "/v1/recommend/batch", json={"requests": [{"user_id": u, "k": 3} for u in ids]}
    )
    assert response.status_code == 200
    responses = response.json()["responses"]
    assert [r["user_id"] for r in responses] == ids
    assert [r["fallback"] for r in responses] == [None, None, None, "cold_start"]
    assert len({r["request_id"] for r in responses}) == 4
