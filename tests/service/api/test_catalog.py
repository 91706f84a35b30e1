"""The live catalog through HTTP: /admin/items and GET /v1/items/{id}, on the tiny bundle.

The real app with its lifespan, the real item tower (to know where a new item must rank) and
the session's real Redis (or the in-process log); a private Redis for the outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from service.catalog.bundle import Bundle, load_bundle
from service.catalog.live import LiveItem
from service.settings import Settings
from tests.service.api.helpers import items, metric, users
from tests.service.conftest import serve
from tests.service.redis_server import RedisServer, free_port
from tests.service.test_admin import AUTH, TOKEN

NEW = {"item_id": "new-1", "title": "Brand New Film (2031)", "genres": ["Drama"], "year": 2031}


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest_asyncio.fixture(params=["redis", "memory"])
async def admin(
    request: pytest.FixtureRequest, bundle_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = Settings(
        bundle=bundle_dir, redis_url=redis_url, admin_token=TOKEN, redis_timeout_ms=2_000
    )
    async with serve(settings) as (_, http):
        yield http


def _embedding(bundle: Bundle, item: dict[str, Any]) -> list[float]:
    live = LiveItem(item["item_id"], item["title"], tuple(item["genres"]), item.get("year"))
    return [float(x) for x in bundle.items.embed([live])[0]]


async def _retrieve(http: httpx.AsyncClient, **body: Any) -> list[str]:
    response = await http.post("/v1/retrieve", json=body)
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


async def test_an_upserted_item_is_held_live_and_retrieved_first_by_its_own_embedding(
    admin: httpx.AsyncClient, bundle: Bundle
) -> None:
    response = await admin.post("/admin/items", json=NEW, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["upserted"] == 1
    assert response.json()["catalog_versions"] == {bundle.version: 1}
    held = (await admin.get("/admin/items/new-1", headers=AUTH)).json()
    assert (held["source"], held["available"], held["year"]) == ("live", True, 2031)
    public = await admin.get("/v1/items/new-1")
    assert public.status_code == 200 and public.json()["title"] == NEW["title"]
    found = await _retrieve(admin, embedding=_embedding(bundle, NEW), k=5)
    assert found[0] == "new-1" and len(found) == 5
    similar = await admin.get("/v1/items/new-1/similar", params={"k": 5})
    assert similar.status_code == 200 and "new-1" not in [
        i["item_id"] for i in similar.json()["items"]
    ]


async def test_a_deleted_item_is_never_served_and_pages_stay_full(
    admin: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[3]
    first = (await admin.post("/v1/recommend", json={"user_id": user, "k": 10})).json()["items"]
    doomed = first[0]["item_id"]
    assert (await admin.delete(f"/admin/items/{doomed}", headers=AUTH)).status_code == 200
    again = (await admin.post("/v1/recommend", json={"user_id": user, "k": 10})).json()["items"]
    assert doomed not in [i["item_id"] for i in again] and len(again) == 10
    everything = await _retrieve(admin, item_id=items(bundle_dir)[0]["item_id"], k=500)
    assert doomed not in everything
    assert (await admin.get(f"/v1/items/{doomed}")).status_code == 404
    assert (await admin.get(f"/v1/items/{doomed}/similar")).status_code == 404
    assert (await admin.delete(f"/admin/items/{doomed}", headers=AUTH)).status_code == 404


async def test_hide_then_show(admin: httpx.AsyncClient, bundle_dir: Path) -> None:
    user = users(bundle_dir)[4]
    page = (await admin.post("/v1/recommend", json={"user_id": user, "k": 10})).json()["items"]
    hidden = page[0]["item_id"]
    patch = await admin.patch(f"/admin/items/{hidden}", json={"available": False}, headers=AUTH)
    assert patch.status_code == 200, patch.text
    held = (await admin.get(f"/admin/items/{hidden}", headers=AUTH)).json()
    assert (held["source"], held["available"]) == ("bundle", False)
    page = (await admin.post("/v1/recommend", json={"user_id": user, "k": 10})).json()["items"]
    assert hidden not in [i["item_id"] for i in page] and len(page) == 10
    await admin.patch(f"/admin/items/{hidden}", json={"available": True}, headers=AUTH)
    page = (await admin.post("/v1/recommend", json={"user_id": user, "k": 10})).json()["items"]
    assert page[0]["item_id"] == hidden


async def test_an_updated_bundle_item_comes_back_once_with_its_new_metadata(
    admin: httpx.AsyncClient, bundle_dir: Path
) -> None:
    known = items(bundle_dir)[9]
    update = {**known, "title": "Renamed (1999)", "year": 1999}
    assert (await admin.post("/admin/items", json=[update], headers=AUTH)).status_code == 200
    held = (await admin.get(f"/admin/items/{known['item_id']}", headers=AUTH)).json()
    assert (held["source"], held["title"]) == ("live", "Renamed (1999)")
    everything = await _retrieve(admin, item_id=items(bundle_dir)[0]["item_id"], k=500)
    assert everything.count(known["item_id"]) == 1
    assert len(everything) == len(set(everything)) == len(items(bundle_dir)) - 1


async def test_filters_apply_to_live_items(admin: httpx.AsyncClient, bundle: Bundle) -> None:
    await admin.post("/admin/items", json=NEW, headers=AUTH)
    query = _embedding(bundle, NEW)
    assert "new-1" in await _retrieve(
        admin, embedding=query, k=5, filters={"genres_any": ["Drama"]}
    )
    assert "new-1" not in await _retrieve(
        admin, embedding=query, k=5, filters={"genres_none": ["Drama"]}
    )
    assert "new-1" not in await _retrieve(admin, embedding=query, k=5, filters={"year_max": 2000})


async def test_bad_input(admin: httpx.AsyncClient) -> None:
    long_title = {**NEW, "title": "x" * 10_000}
    assert (await admin.post("/admin/items", json=long_title, headers=AUTH)).status_code == 422
    long_id = {**NEW, "item_id": "i" * 129}
    assert (await admin.post("/admin/items", json=long_id, headers=AUTH)).status_code == 422
    many = [{**NEW, "item_id": f"n{i}"} for i in range(1_001)]
    response = await admin.post("/admin/items", json=many, headers=AUTH)
    assert response.status_code == 422 and "1000" in response.json()["error"]["message"]
    for method in ("delete", "patch"):
        kwargs: dict[str, Any] = {"json": {"available": False}} if method == "patch" else {}
        missing = await admin.request(method, "/admin/items/nope", headers=AUTH, **kwargs)
        assert missing.status_code == 404
    assert (await admin.get("/v1/items/nope")).status_code == 404
    assert (await admin.post("/admin/items", json=NEW)).status_code == 401


async def test_unknown_genres_are_accepted_and_counted(admin: httpx.AsyncClient) -> None:
    before = metric((await admin.get("/metrics")).text, "duet_catalog_unknown_genres_total")
    odd = {**NEW, "genres": ["Drama", "Not-A-Genre", "Neither"]}
    response = await admin.post("/admin/items", json=odd, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["unknown_genres"] == ["Neither", "Not-A-Genre"]
    after = metric((await admin.get("/metrics")).text, "duet_catalog_unknown_genres_total")
    assert after - before == 2


async def test_a_redis_failure_during_an_upsert_is_503_and_nothing_is_applied(
    bundle_dir: Path,
) -> None:
    server = RedisServer(free_port()).start()
    settings = Settings(bundle=bundle_dir, redis_url=server.url, admin_token=TOKEN)
    try:
        async with serve(settings) as (_, http):
            server.stop()
            response = await http.post("/admin/items", json=NEW, headers=AUTH)
            assert response.status_code == 503, response.text
            server.start()
            assert (await http.get("/admin/items/new-1", headers=AUTH)).status_code == 404
            assert (await http.get("/v1/items/new-1")).status_code == 404
    finally:
        server.stop()


async def test_a_worker_whose_tail_is_stopped_still_sees_a_delete_on_its_next_request(
    bundle_dir: Path, redis_url: str
) -> None:
    """Not the tail but the version in the request's round trip: B catches up before answering."""
    settings = Settings(
        bundle=bundle_dir, redis_url=redis_url, admin_token=TOKEN, redis_timeout_ms=2_000
    )
    async with serve(settings) as (_, a), serve(settings) as (app_b, b):
        bundle = app_b.state.arms.current.default.bundle
        await app_b.state.feeds.sync(bundle).stop()  # B hears of changes only from requests
        user = users(bundle_dir)[5]
        for _ in range(2):  # a repeat may come from B's local layer (no store trip)
            page = (await b.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
        doomed = page["items"][0]["item_id"]
        assert (await a.delete(f"/admin/items/{doomed}", headers=AUTH)).status_code == 200
        page = (await b.post("/v1/recommend", json={"user_id": user, "k": 10})).json()
        assert doomed not in [i["item_id"] for i in page["items"]]
        assert len(page["items"]) == 10
        assert doomed not in await _retrieve(b, item_id=items(bundle_dir)[0]["item_id"], k=500)
        await a.post("/admin/items", json=NEW, headers=AUTH)
        assert (await b.get("/v1/items/new-1")).status_code == 200


async def test_a_reload_replaces_the_delta_and_replays_the_log_into_the_new_bundle(
    bundle_dir: Path, redis_url: str
) -> None:
    settings = Settings(
        bundle=bundle_dir, redis_url=redis_url, admin_token=TOKEN, redis_timeout_ms=2_000
    )
    async with serve(settings) as (app, http):
        old = app.state.arms.current.default.bundle
        old_sync = app.state.feeds.sync(old)
        assert (await http.post("/admin/items", json=NEW, headers=AUTH)).status_code == 200
        reload = await http.post("/admin/bundles/reload", headers=AUTH, json={})
        assert reload.status_code == 200, reload.text
        new = app.state.arms.current.default.bundle
        assert new is not old and app.state.feeds.sync(old) is None
        assert old_sync._task is not None and old_sync._task.done()  # the old tail stopped
        assert new.live.item("new-1") is not None  # replayed before the swap
        held = (await http.get("/admin/items/new-1", headers=AUTH)).json()
        assert held["source"] == "live"


@pytest.mark.parametrize("relation", ["similar", "complementary"])
async def test_a_memoised_item_page_never_outlives_a_live_change(
    admin: httpx.AsyncClient, bundle_dir: Path, relation: str
) -> None:
    """Item-to-item pages are reused while nothing changed, and recomputed after a hide, an
    upsert or a delete: the hidden neighbour is gone at once and the page stays full."""
    item = items(bundle_dir)[2]["item_id"]
    path = f"/v1/items/{item}/{relation}"
    first = (await admin.get(path, params={"k": 8})).json()["items"]
    before = (await admin.get("/metrics")).text
    again = (await admin.get(path, params={"k": 8})).json()["items"]
    after = (await admin.get("/metrics")).text
    assert again == first
    assert (
        metric(after, "duet_related_memo_hits_total")
        - metric(before, "duet_related_memo_hits_total")
        == 1
    )
    neighbour = first[0]["item_id"]
    patch = await admin.patch(f"/admin/items/{neighbour}", json={"available": False}, headers=AUTH)
    assert patch.status_code == 200, patch.text
    hidden = (await admin.get(path, params={"k": 8})).json()["items"]
    assert neighbour not in [i["item_id"] for i in hidden] and len(hidden) == 8
    assert [i["item_id"] for i in hidden[:7]] == [i["item_id"] for i in first[1:]]
    body: dict[str, Any] = {"item_id": item, "k": 8}
    if relation == "complementary":
        body = {"items": [item], "relation": "complementary", "k": 8}
    assert await _retrieve(admin, **body) == [i["item_id"] for i in hidden]


async def test_similar_and_related_similar_do_not_share_a_memo_entry(
    admin: httpx.AsyncClient, bundle_dir: Path
) -> None:
    """`GET .../similar` merges the live delta, `relation: similar` over `items` does not: one
    memoised answer must never be served for the other."""
    item = items(bundle_dir)[5]["item_id"]
    await admin.get(f"/v1/items/{item}/similar", params={"k": 6})
    before = (await admin.get("/metrics")).text
    await _retrieve(admin, items=[item], relation="similar", k=6)
    after = (await admin.get("/metrics")).text
    assert metric(after, "duet_related_memo_hits_total") == metric(
        before, "duet_related_memo_hits_total"
    )
