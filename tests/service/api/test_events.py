"""POST /v1/events: accepted events reach the next recommend (history, exclusion, cache)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from service.settings import Settings
from tests.service.api.helpers import items, metric, users
from tests.service.conftest import serve


async def test_a_click_is_reflected_by_the_next_recommend(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[10]
    before = (await client.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    clicked = before["items"][0]["item_id"]
    started = time.monotonic()
    response = await client.post(
        "/v1/events", json={"user_id": user, "item_id": clicked, "type": "click"}
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    after = (await client.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    assert time.monotonic() - started < 1.0
    returned = [i["item_id"] for i in after["items"]]
    assert clicked not in returned  # now seen: excluded
    assert len(returned) == 10


async def test_events_give_an_unknown_user_a_history_based_answer(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    catalog = items(bundle_dir)
    events = [
        {
            "user_id": "newcomer",
            "item_id": item["item_id"],
            "type": "view",
            "timestamp": 1_700_000_000 + n,
        }
        for n, item in enumerate(catalog[:3])
    ]
    assert (await client.post("/v1/events", json=events)).status_code == 202
    body = (await client.post("/v1/recommend", json={"user_id": "newcomer"})).json()
    assert body["fallback"] is None
    assert not {e["item_id"] for e in events} & {i["item_id"] for i in body["items"]}


async def test_the_embedding_changes_after_an_event(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[11]
    catalog = items(bundle_dir)
    first = (await client.post("/v1/recommend", json={"user_id": user, "k": 50})).json()
    scores_before = {i["item_id"]: i["score"] for i in first["items"]}
    events = [
        {"user_id": user, "item_id": catalog[-1 - n]["item_id"], "type": "purchase"}
        for n in range(5)
    ]
    await client.post("/v1/events", json=events)
    second = (await client.post("/v1/recommend", json={"user_id": user, "k": 50})).json()
    common = set(scores_before) & {i["item_id"] for i in second["items"]}
    assert any(
        abs(scores_before[i["item_id"]] - i["score"]) > 1e-6
        for i in second["items"]
        if i["item_id"] in common
    )


async def test_events_are_counted_by_type(client: httpx.AsyncClient, bundle_dir: Path) -> None:
    before = (await client.get("/metrics")).text
    item = items(bundle_dir)[0]["item_id"]
    body = [{"user_id": "c", "item_id": item, "type": "rating", "value": 4.5}] * 3
    assert (await client.post("/v1/events", json=body)).status_code == 202
    after = (await client.get("/metrics")).text
    delta = metric(after, "duet_events_ingested_total", type="rating") - metric(
        before, "duet_events_ingested_total", type="rating"
    )
    assert delta == 3


async def test_a_thousand_interactions_are_never_recommended(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    """1,000 events over 380 items: most fall out of the tower's 200-item window, none is shown."""
    catalog = [item["item_id"] for item in items(bundle_dir)]
    seen = catalog[:380]
    events = [
        {"user_id": "heavy", "item_id": seen[n % len(seen)], "type": "view", "timestamp": n}
        for n in range(1_000)
    ]
    assert (await client.post("/v1/events", json=events)).status_code == 202
    for k in (5, 20, 50):  # the page memo's second answer too
        for _ in range(2):
            body = (await client.post("/v1/recommend", json={"user_id": "heavy", "k": k})).json()
            returned = {i["item_id"] for i in body["items"]}
            assert returned, body
            assert not returned & set(seen)
            assert returned <= set(catalog[380:])


async def test_negative_events_exclude_but_never_feed_the_tower(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[20]
    first = (await client.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    top = [i["item_id"] for i in first["items"]]
    events = [
        {"user_id": user, "item_id": top[0], "type": "dislike"},
        {"user_id": user, "item_id": top[1], "type": "hide"},
        {"user_id": user, "item_id": top[2], "type": "rating", "value": 1.0},
    ]
    assert (await client.post("/v1/events", json=events)).status_code == 202
    after = (await client.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
    returned = [i["item_id"] for i in after["items"]]
    assert not set(top[:3]) & set(returned)
    assert returned[:7] == top[3:]  # same embedding (nothing fed to the tower): same order


async def test_event_types_and_ratings_are_validated(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/v1/events", json={"user_id": "u", "item_id": "1", "type": "zap"})
    assert unknown.status_code == 422
    assert "dislike" in unknown.json()["error"]["message"]
    for value in (0.0, 5.5, None):
        event = {"user_id": "u", "item_id": "1", "type": "rating", "value": value}
        response = await client.post("/v1/events", json=event)
        assert response.status_code == 422
        assert "[0.5, 5.0]" in response.json()["error"]["message"]


async def test_an_event_for_an_item_the_bundle_lacks_is_stored_and_counted(
    client: httpx.AsyncClient,
) -> None:
    before = metric(
        (await client.get("/metrics")).text, "duet_unknown_ids_total", kind="event_item"
    )
    event = {"user_id": "u", "item_id": "not-in-bundle", "type": "click"}
    assert (await client.post("/v1/events", json=event)).status_code == 202
    after = metric((await client.get("/metrics")).text, "duet_unknown_ids_total", kind="event_item")
    assert after == before + 1


async def test_past_the_seen_bound_the_oldest_are_dropped_counted_and_may_return(
    bundle_dir: Path, redis_url: str
) -> None:
    settings = Settings(
        bundle=bundle_dir, redis_url=redis_url, seen_max_items=50, redis_timeout_ms=1_000
    )
    catalog = [item["item_id"] for item in items(bundle_dir)]
    async with serve(settings) as (_, http):
        before = metric((await http.get("/metrics")).text, "duet_seen_dropped_total")
        events = [
            {"user_id": "bounded", "item_id": catalog[n], "type": "hide", "timestamp": n}
            for n in range(80)
        ]
        assert (await http.post("/v1/events", json=events)).status_code == 202
        after = metric((await http.get("/metrics")).text, "duet_seen_dropped_total")
        assert after - before == 30
        body = {"user_id": "bounded", "k": 400}
        returned = {
            i["item_id"] for i in (await http.post("/v1/recommend", json=body)).json()["items"]
        }
        assert not returned & set(catalog[30:80])  # the newest 50 stay excluded
        assert returned & set(catalog[:30])  # the dropped ones may come back
