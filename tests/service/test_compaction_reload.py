"""Serving a compacted bundle: no change lost, one log for both bundles, a reload that fails none.

The real app and lifespan on the session's tiny bundle and real Redis; the real
`python -m models compact` (its `main`, in a thread) between admin calls.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI

from models.__main__ import main
from service.catalog.bundle import Bundle
from service.catalog.editor import held
from service.settings import Settings
from tests.service.api.helpers import users
from tests.service.conftest import serve
from tests.service.test_admin import AUTH, TOKEN

LIVE = [
    {"item_id": f"live-{i}", "title": f"Live Film {i} (2030)", "genres": ["Drama"], "year": 2030}
    for i in range(40)
]


def settings(bundle: Path, redis_url: str) -> Settings:
    return Settings(bundle=bundle, redis_url=redis_url, admin_token=TOKEN, redis_timeout_ms=2_000)


async def compact(bundle: Path, redis_url: str, out: Path) -> Path:
    args = ["compact", "--bundle", str(bundle), "--redis-url", redis_url, "--out", str(out)]
    assert await asyncio.to_thread(main, [*args, "--no-progress"]) == 0
    return out


def served(app: FastAPI) -> Bundle:
    bundle: Bundle = app.state.arms.current.default.bundle
    return bundle


async def ok(response: Any) -> dict[str, Any]:
    result = await response
    assert result.status_code == 200, result.text
    body: dict[str, Any] = result.json()
    return body


async def test_changes_after_the_compaction_position_survive_the_reload(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    async with serve(settings(bundle_dir, redis_url)) as (app, http):
        old = served(app)
        ids = [old.catalog.item_ids[row] for row in range(6)]
        await ok(http.post("/admin/items", json=LIVE[:2], headers=AUTH))
        await ok(http.delete(f"/admin/items/{ids[0]}", headers=AUTH))
        await ok(http.patch(f"/admin/items/{ids[1]}", json={"available": False}, headers=AUTH))
        compacted = await compact(bundle_dir, redis_url, tmp_path / "compacted")
        # after the compaction's position, written to the old bundle's log while it serves
        await ok(http.post("/admin/items", json=LIVE[2], headers=AUTH))
        await ok(http.delete("/admin/items/live-0", headers=AUTH))  # folded in, then deleted
        await ok(http.delete(f"/admin/items/{ids[2]}", headers=AUTH))
        await ok(http.patch(f"/admin/items/{ids[1]}", json={"available": True}, headers=AUTH))
        renamed = {**LIVE[1], "title": "Renamed Live Film"}
        await ok(http.post("/admin/items", json=renamed, headers=AUTH))

        reload = await ok(
            http.post("/admin/bundles/reload", json={"bundle": str(compacted)}, headers=AUTH)
        )
        new = served(app)
        assert reload["arms"][0]["bundle_version"] == new.version != old.version
        assert new.manifest.compacted_from is not None
        for gone in ("live-0", ids[0], ids[2]):
            assert (await http.get(f"/v1/items/{gone}")).status_code == 404, gone
        assert "live-0" in new.catalog.rows  # in the bundle, deleted by the replayed log
        shown = await ok(http.get(f"/admin/items/{ids[1]}", headers=AUTH))
        assert (shown["source"], shown["available"]) == ("bundle", True)
        assert (await ok(http.get("/v1/items/live-1")))["title"] == "Renamed Live Film"
        added = await ok(http.get("/admin/items/live-2", headers=AUTH))
        assert (added["source"], added["catalog_version"]) == ("live", 9)
        item = new.live.item("live-2")
        assert item is not None
        vector = new.items.embed([item])[0]
        found = await ok(http.post("/v1/retrieve", json={"embedding": vector.tolist(), "k": 50}))
        names = [i["item_id"] for i in found["items"]]
        assert names[0] == "live-2" and "live-0" not in names and ids[2] not in names


async def test_a_change_made_while_both_bundles_are_served_is_logged_once_for_both(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    compacted = await compact(bundle_dir, redis_url, tmp_path / "compacted")
    config = tmp_path / "experiment.toml"
    config.write_text(
        f'name = "both"\nsalt = "s"\n\n[[arms]]\nname = "control"\nweight = 1\n'
        f'bundle = "{bundle_dir}"\n\n[[arms]]\nname = "compacted"\nweight = 1\n'
        f'bundle = "{compacted}"\n'
    )
    both = Settings(experiments=config, redis_url=redis_url, admin_token=TOKEN)
    async with serve(both) as (app, http):
        arms = app.state.arms.current.arms
        old, new = arms["control"].bundle, arms["compacted"].bundle
        doomed = old.catalog.item_ids[3]
        answer = await ok(http.post("/admin/items", json=LIVE[0], headers=AUTH))
        assert answer["catalog_versions"] == {old.version: 1, new.version: 1}
        await ok(http.delete(f"/admin/items/{doomed}", headers=AUTH))
        with redis.Redis.from_url(redis_url, socket_timeout=2.0) as client:
            assert client.xlen(f"duet:cat:{{{old.version}}}:log") == 2
            assert not client.exists(f"duet:cat:{{{new.version}}}:log")
        for bundle in (old, new):
            assert held(bundle, doomed) is None
            assert held(bundle, "live-0") is not None
            assert app.state.feeds.sync(bundle).version == 2


async def test_a_reload_to_the_compacted_bundle_under_load_fails_no_request(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    async with serve(settings(bundle_dir, redis_url)) as (app, http):
        old = served(app)
        await ok(http.post("/admin/items", json=LIVE, headers=AUTH))
        vector = old.live.vector("live-7")
        assert vector is not None and not old.live.is_empty()
        compacted = await compact(bundle_dir, redis_url, tmp_path / "compacted")
        everyone = users(bundle_dir)
        reload = asyncio.create_task(
            http.post("/admin/bundles/reload", json={"bundle": str(compacted)}, headers=AUTH)
        )
        codes: list[int] = []

        async def load(offset: int) -> None:
            """Requests for as long as the reload runs (at least 30 each)."""
            sent = 0
            while not reload.done() or sent < 30:
                user = everyone[(offset + sent) % len(everyone)]
                body = {"user_id": user, "k": 10}
                response = await http.post("/v1/recommend", json=body)
                codes.append(response.status_code)
                response = await http.post(
                    "/v1/retrieve", json={"embedding": vector.tolist(), "k": 5}
                )
                codes.append(response.status_code)
                sent += 1

        await asyncio.gather(load(0), load(50), load(100))
        assert (await reload).status_code == 200
        assert len(codes) >= 180 and set(codes) == {200}
        new = served(app)
        assert new.version != old.version and new.live.is_empty()  # the delta is retired
        assert app.state.feeds.sync(old) is None
        found = await ok(http.post("/v1/retrieve", json={"embedding": vector.tolist(), "k": 5}))
        assert found["items"][0]["item_id"] == "live-7"
        assert (await ok(http.get("/admin/items/live-7", headers=AUTH)))["source"] == "bundle"
