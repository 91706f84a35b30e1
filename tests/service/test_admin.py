"""Experiments through HTTP: sticky arms, override, exposures, attribution, report, admin reload.

The real app with its lifespan, two real bundles (the session's tiny one and a copy with
another version), and the session's real Redis.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.catalog.columns import read_strings
from service.experiments import Assigner, load_experiment
from service.lifecycle import ReloadRejectedError
from service.settings import Settings
from tests.service.api.helpers import metric, users, version
from tests.service.conftest import serve

TOKEN = "test-admin-token-0123456789"  # noqa: S105 (a test secret)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def settings_for(config: Path, redis_url: str, admin_token: str | None = None) -> Settings:
    """Generous Redis deadlines: these tests count exposures exactly, even on a busy machine."""
    return Settings(
        experiments=config, redis_url=redis_url, admin_token=admin_token, redis_timeout_ms=2_000
    )


def copy_bundle(source: Path, target: Path, version: str, corrupt: str | None = None) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["bundle_version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))
    if corrupt is not None:
        data = bytearray((target / corrupt).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / corrupt).write_bytes(bytes(data))
    return target


def write_config(path: Path, b_bundle: str = "v2", *, allow_override: bool = True) -> Path:
    path.write_text(
        f"""
name = "ranker"
salt = "test-salt"
allow_override = {str(allow_override).lower()}

[[arms]]
name = "control"
weight = 1
bundle = "v1"

[[arms]]
name = "popular"
weight = 1
bundle = "{b_bundle}"
policy = "popularity_blend"
popularity_weight = 1.0
"""
    )
    return path


@pytest.fixture
def config(bundle_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(bundle_dir, tmp_path / "v1")
    copy_bundle(bundle_dir, tmp_path / "v2", "tiny-v2")
    return write_config(tmp_path / "experiment.toml")


@pytest.fixture
async def served(config: Path, redis_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = settings_for(config, redis_url, admin_token=TOKEN)
    async with serve(settings) as pair:
        yield pair


async def recommend(client: httpx.AsyncClient, user: str, **headers: str) -> httpx.Response:
    return await client.post("/v1/recommend", json={"user_id": user, "k": 5}, headers=headers)


async def test_users_get_their_sticky_arm(
    served: tuple[FastAPI, httpx.AsyncClient], config: Path, bundle_dir: Path
) -> None:
    _, client = served
    assigner = Assigner(load_experiment(config))
    seen = set()
    for user in users(bundle_dir)[:40]:
        first, again = await recommend(client, user), await recommend(client, user)
        assert first.status_code == again.status_code == 200
        assert first.json()["arm"] == again.json()["arm"] == assigner.assign(user)
        seen.add(first.json()["arm"])
        expected = {"control": version(bundle_dir), "popular": "tiny-v2"}[first.json()["arm"]]
        assert first.json()["model_version"] == expected
    assert seen == {"control", "popular"}


async def test_override_header(served: tuple[FastAPI, httpx.AsyncClient], bundle_dir: Path) -> None:
    _, client = served
    user = users(bundle_dir)[0]
    for arm in ("control", "popular"):
        response = await recommend(client, user, **{"X-Duet-Arm": arm})
        assert response.status_code == 200
        assert response.json()["arm"] == arm
    unknown = await recommend(client, user, **{"X-Duet-Arm": "nope"})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {
        "code": "unknown_arm",
        "message": "unknown arm 'nope'; known arms: control, popular",
        "field": "X-Duet-Arm",
    }


async def test_override_ignored_when_not_allowed(
    config: Path, redis_url: str, bundle_dir: Path
) -> None:
    write_config(config, allow_override=False)
    assigner = Assigner(load_experiment(config))
    settings = settings_for(config, redis_url, admin_token=TOKEN)
    async with serve(settings) as (_, client):
        user = users(bundle_dir)[1]
        own = assigner.assign(user)
        other = "popular" if own == "control" else "control"
        for header in (other, "nope"):
            response = await recommend(client, user, **{"X-Duet-Arm": header})
            assert response.status_code == 200
            assert response.json()["arm"] == own


async def test_exposures_clicks_and_report(
    served: tuple[FastAPI, httpx.AsyncClient], bundle_dir: Path
) -> None:
    app, client = served
    everyone = users(bundle_dir)
    # control: 4 users, 2 clicked (one twice on one item, one on two items);
    # popular: 3 users, 1 clicked without a request id (last exposure in the window)
    answers: dict[str, list[dict[str, Any]]] = {"control": [], "popular": []}
    for index, user in enumerate(everyone[:4]):
        response = await recommend(client, user, **{"X-Duet-Arm": "control"})
        answers["control"].append(response.json())
        assert index == len(answers["control"]) - 1
    for user in everyone[4:7]:
        response = await recommend(client, user, **{"X-Duet-Arm": "popular"})
        answers["popular"].append(response.json())
    c0, c1 = answers["control"][0], answers["control"][1]
    p0 = answers["popular"][0]
    events = [
        click(c0, 0, with_request_id=True),
        click(c0, 0, with_request_id=True),  # the same item again: counted once
        click(c1, 1, with_request_id=True),
        click(c1, 3, with_request_id=True),
        click(p0, 2, with_request_id=False),
        {"user_id": c0["user_id"], "item_id": "not-exposed", "type": "click"},
    ]
    accepted = await client.post("/v1/events", json=events)
    assert accepted.status_code == 202

    report = (await client.get("/v1/experiments/ranker/report")).json()
    control, popular = report["arms"]
    assert report["experiment"] == "ranker"
    assert report["control"] == "control"
    assert (control["users"], control["exposures"], control["clicks"]) == (4, 4, 3)
    assert control["clicked_exposures"] == 2
    assert (popular["users"], popular["exposures"], popular["clicks"]) == (3, 3, 1)
    assert control["ctr"] == pytest.approx(0.5)
    assert popular["ctr"] == pytest.approx(1 / 3)
    assert popular["lift"] == pytest.approx((1 / 3 - 0.5) / 0.5)
    # pooled p = 3/7, se = sqrt(3/7 · 4/7 · (1/4 + 1/3)); z = (1/3 - 1/2) / se
    se = math.sqrt(3 / 7 * 4 / 7 * (1 / 4 + 1 / 3))
    assert popular["z"] == pytest.approx((1 / 3 - 0.5) / se)
    assert popular["p_value"] == pytest.approx(math.erfc(abs((1 / 3 - 0.5) / se) / math.sqrt(2)))
    assert control["lift"] is None
    assert control["ctr_ci_low"] < 0.5 < control["ctr_ci_high"]
    # 4 vs 3 users at 50/50: chi² = 2 · 0.5² / 3.5
    assert report["srm"]["chi_square"] == pytest.approx(0.5 / 3.5)
    assert report["srm"]["mismatch"] is False

    # written in the background, so the stream holds all 7 but not necessarily in answer order
    recent = {r["request_id"]: r for r in await app.state.tracker.exposures.recent(7)}
    last = answers["popular"][-1]
    record = recent[last["request_id"]]
    assert len(recent) == 7
    assert record["arm"] == "popular"
    assert record["bundle_version"] == "tiny-v2"
    assert record["items"][0] == {"item_id": last["items"][0]["item_id"], "position": 1}

    text = (await client.get("/metrics")).text
    labels = {"experiment": "ranker", "arm": "control"}
    assert metric(text, "duet_experiment_assignments_total", **labels) >= 4
    assert metric(text, "duet_experiment_exposures_total", **labels) >= 4
    assert metric(text, "duet_experiment_clicks_total", **labels) >= 3

    missing = await client.get("/v1/experiments/other/report")
    assert missing.status_code == 404


def click(answer: dict[str, Any], position: int, *, with_request_id: bool) -> dict[str, Any]:
    event = {
        "user_id": answer["user_id"],
        "item_id": answer["items"][position]["item_id"],
        "type": "click",
    }
    if with_request_id:
        event["request_id"] = answer["request_id"]
    return event


async def test_admin_needs_the_token(served: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = served
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path in (("GET", "/admin/bundles"), ("POST", "/admin/bundles/reload")):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"


async def test_sample_ids_are_known_ids_of_the_control_bundle(
    served: tuple[FastAPI, httpx.AsyncClient], bundle_dir: Path
) -> None:
    _, client = served
    assert (await client.get("/admin/sample-ids")).status_code == 401
    response = await client.get("/admin/sample-ids?users=4&items=6", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["arm"] == "control" and body["bundle_version"] == version(bundle_dir)
    assert len(body["user_ids"]) == 4 and len(body["item_ids"]) == 6
    assert set(body["user_ids"]) <= set(read_strings(bundle_dir, "user_ids"))
    assert set(body["item_ids"]) <= set(read_strings(bundle_dir, "item_ids"))
    assert body["embedding_dim"] > 0 and body["genres"]
    for query in ("users=10001", "items=-1", "users=x"):
        refused = await client.get(f"/admin/sample-ids?{query}", headers=AUTH)
        assert refused.status_code == 422, query


async def test_admin_disabled_without_a_token(config: Path, redis_url: str) -> None:
    async with serve(settings_for(config, redis_url)) as (_, client):
        response = await client.get("/admin/bundles", headers=AUTH)
        assert response.status_code == 401
        assert "disabled" in response.json()["error"]["message"]


async def test_list_and_reload(
    served: tuple[FastAPI, httpx.AsyncClient], config: Path, bundle_dir: Path
) -> None:
    _, client = served
    listing = (await client.get("/admin/bundles", headers=AUTH)).json()
    assert listing["experiment"] == "ranker"
    assert [(a["name"], a["policy"], a["control"]) for a in listing["arms"]] == [
        ("control", "score", True),
        ("popular", "popularity_blend", False),
    ]
    assert listing["reload"]["running"] is False

    copy_bundle(bundle_dir, config.parent / "v3", "tiny-v3")
    write_config(config, "v3")
    response = await client.post("/admin/bundles/reload", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "reloaded"
    assert {a["name"]: a["bundle_version"] for a in body["arms"]}["popular"] == "tiny-v3"

    user = users(bundle_dir)[0]
    served_by = await recommend(client, user, **{"X-Duet-Arm": "popular"})
    assert served_by.json()["model_version"] == "tiny-v3"

    one = await client.post(
        "/admin/bundles/reload", headers=AUTH, json={"arm": "popular", "bundle": "v2"}
    )
    assert one.status_code == 200
    assert {a["name"]: a["bundle_version"] for a in one.json()["arms"]}["popular"] == "tiny-v2"
    unknown = await client.post("/admin/bundles/reload", headers=AUTH, json={"arm": "zz"})
    assert unknown.status_code == 400
    nothing = {"arm": "popular", "bundle": "no-such-bundle"}
    absent = await client.post("/admin/bundles/reload", headers=AUTH, json=nothing)
    assert absent.status_code == 404 and absent.json()["error"]["field"] == "bundle"
    deep = {"arm": "popular", "bundle": "/".join(["0" * 250] * 16)}  # past PATH_MAX once joined
    too_long = await client.post("/admin/bundles/reload", headers=AUTH, json=deep)
    assert too_long.status_code == 404
    extra = await client.post("/admin/bundles/reload", headers=AUTH, json={"colour": "red"})
    assert extra.status_code == 422


async def test_corrupt_bundle_rejected_while_requests_keep_succeeding(
    served: tuple[FastAPI, httpx.AsyncClient], config: Path, bundle_dir: Path
) -> None:
    _, client = served
    copy_bundle(bundle_dir, config.parent / "bad", "tiny-bad", corrupt="items.faiss")
    write_config(config, "bad")
    everyone = users(bundle_dir)

    async def load() -> list[int]:
        codes = []
        for index in range(60):
            response = await recommend(client, everyone[index % len(everyone)])
            codes.append(response.status_code)
        return codes

    reload_response, *loads = await asyncio.gather(
        client.post("/admin/bundles/reload", headers=AUTH), load(), load()
    )
    assert reload_response.status_code == 422
    error = reload_response.json()["error"]
    assert error["code"] == "reload_rejected"
    assert "items.faiss: sha256 mismatch" in error["message"]
    assert all(code == 200 for codes in loads for code in codes)
    listing = (await client.get("/admin/bundles", headers=AUTH)).json()
    assert {a["name"]: a["bundle_version"] for a in listing["arms"]}["popular"] == "tiny-v2"
    assert "sha256 mismatch" in listing["reload"]["last_error"]


async def test_swap_under_load_loses_no_request(
    served: tuple[FastAPI, httpx.AsyncClient], config: Path, bundle_dir: Path
) -> None:
    _, client = served
    copy_bundle(bundle_dir, config.parent / "v4", "tiny-v4")
    write_config(config, "v4")
    user = users(bundle_dir)[2]
    versions: list[str] = []

    reload = asyncio.create_task(client.post("/admin/bundles/reload", headers=AUTH))

    async def load() -> list[int]:
        """Recommends for as long as the reload runs (at least 20), however long it takes."""
        codes = []
        while not reload.done() or len(codes) < 20:
            response = await recommend(client, user, **{"X-Duet-Arm": "popular"})
            codes.append(response.status_code)
            assert response.status_code == 200, response.text
            versions.append(response.json()["model_version"])
        return codes

    loads = await asyncio.gather(load(), load())
    assert (await reload).status_code == 200
    assert all(code == 200 for codes in loads for code in codes)
    assert set(versions) <= {"tiny-v2", "tiny-v4"}
    after = await recommend(client, user, **{"X-Duet-Arm": "popular"})
    assert after.json()["model_version"] == "tiny-v4"


async def test_second_reload_while_one_runs_is_409(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = served
    first = asyncio.create_task(client.post("/admin/bundles/reload", headers=AUTH))
    for _ in range(500):
        if app.state.reloader.busy:
            break
        await asyncio.sleep(0.001)
    assert app.state.reloader.busy
    second = await client.post("/admin/bundles/reload", headers=AUTH)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "reload_in_progress"
    assert (await first).status_code == 200


async def test_bad_config_at_startup(config: Path, redis_url: str) -> None:
    """One worker stays up, not ready; with several, startup fails so a rolling restart aborts."""
    write_config(config, "missing")
    async with serve(settings_for(config, redis_url)) as (_, client):
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "no bundle directory" in ready.json()["reason"]
    several = Settings(experiments=config, redis_url=redis_url, workers=2)
    with pytest.raises(ReloadRejectedError, match="no bundle directory"):
        async with serve(several):
            pass


@pytest.mark.parametrize(
    ("bundle", "why"),
    [("v2\x00", "NUL"), ("v" * 5000, "4096"), ("x/" + "n" * 300, "4096"), ("../..", "outside")],
)
async def test_admin_paths_are_validated_before_any_file_call(
    bundle_dir: Path, tmp_path: Path, bundle: str, why: str
) -> None:
    settings = Settings(bundle=bundle_dir, admin_token=TOKEN, admin_bundle_root=tmp_path)
    async with serve(settings) as (_, client):
        response = await client.post("/admin/bundles/reload", headers=AUTH, json={"bundle": bundle})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "bundle"
    assert why in response.json()["error"]["message"]
