"""Bad input is a 4xx JSON error naming the field; never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.service.conftest import serve

JSON = {"content-type": "application/json"}


TOO_MANY_IDS = ",".join(['"x"'] * 1001)
CASES = [
    ("/v1/recommend", '{"user_id": "1", "k": 0}', "k"),
    ("/v1/recommend", '{"user_id": "1", "k": 501}', "k"),
    ("/v1/recommend", '{"user_id": 1}', "user_id"),
    ("/v1/recommend", '{"k": 3}', "user_id"),
    ("/v1/recommend", '{"user_id": ""}', "user_id"),
    ("/v1/recommend", '{"user_id": "1", "surprise": true}', "surprise"),
    ("/v1/recommend", '{"user_id": "1", "filters": {"genre": ["Drama"]}}', "filters.genre"),
    ("/v1/recommend", '{"user_id": "1", "exclude_item_ids": [' + TOO_MANY_IDS + "]}",
     "exclude_item_ids"),
    ("/v1/recommend", '{"user_id": "1",', "body"),
    ("/v1/recommend", "[1, 2]", "body"),
    ("/v1/recommend/batch", '{"requests": []}', "requests"),
    ("/v1/retrieve", '{"embedding": [NaN, 1.0]}', "embedding.0"),
    ("/v1/retrieve", '{"embedding": [Infinity]}', "embedding.0"),
    ("/v1/retrieve", '{"item_id": "1", "history": ["2"]}', "body"),
    ("/v1/retrieve", "{}", "body"),
    ("/v1/events", '{"user_id": "1", "item_id": "2", "type": "teleport"}', "type"),
    ("/v1/events", "[]", "body"),
    ("/v1/events", '{"user_id": "1", "item_id": "2", "type": "view", "timestamp": -5}',
     "timestamp"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "field"), CASES)
async def test_bad_bodies_are_422_naming_the_field(
    client: httpx.AsyncClient, path: str, body: str, field: str
) -> None:
    response = await client.post(path, content=body, headers=JSON)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == field


async def test_a_float32_overflow_embedding_is_422(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    dim = json.loads((bundle_dir / "manifest.json").read_text())["embedding_dim"]
    response = await client.post("/v1/retrieve", json={"embedding": [1e300] * dim})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "embedding.0"  # past float32's range


async def test_an_empty_arm_header_is_422_naming_it(client: httpx.AsyncClient) -> None:
    """The schema makes X-Duet-Arm an enum of the arms: an empty value names none of them."""
    response = await client.post(
        "/v1/recommend", json={"user_id": "1", "k": 5}, headers={"X-Duet-Arm": ""}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "X-Duet-Arm"


async def test_too_many_events_are_refused(client: httpx.AsyncClient) -> None:
    events = [{"user_id": "u", "item_id": "1", "type": "view"}] * 1001
    response = await client.post("/v1/events", json=events)
    assert response.status_code == 422
    assert "1000" in response.json()["error"]["message"]


async def test_oversize_bodies_are_413(bundle_dir: Path) -> None:
    async with serve(Settings(bundle=bundle_dir, max_body_bytes=2048)) as (_, client):
        big = '{"user_id": "1", "history": [' + ",".join(['"1"'] * 1000) + "]}"
        response = await client.post("/v1/recommend", content=big, headers=JSON)
        assert response.status_code == 413
        assert response.json()["error"]["field"] == "body"

        async def chunks() -> object:
            for _ in range(10):
                yield b" " * 1024

        streamed = await client.post("/v1/recommend", content=chunks(), headers=JSON)
        assert streamed.status_code == 413


async def test_a_method_a_path_lacks_is_405_naming_every_method_it_has(
    client: httpx.AsyncClient,
) -> None:
    """/admin/items/{id} is three routes (GET, PATCH, DELETE): `Allow` names all three."""
    response = await client.request("OPTIONS", "/admin/items/some-item")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    assert response.json() == {"detail": "Method Not Allowed"}
    single = await client.request("PUT", "/v1/recommend")  # one route: Starlette's own answer
    assert single.status_code == 405 and single.headers["allow"] == "POST"


async def test_a_popularity_blend_arm_with_a_filter_nothing_passes_answers_an_empty_page(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """Found by schemathesis: the blend policy stacked zero candidates (a 500)."""
    import shutil

    from tests.service.api.helpers import items
    from tests.service.test_admin import copy_bundle, write_config

    shutil.copytree(bundle_dir, tmp_path / "v1")
    copy_bundle(bundle_dir, tmp_path / "v2", "tiny-v2")
    settings = Settings(experiments=write_config(tmp_path / "experiment.toml"))
    history = [items(bundle_dir)[0]["item_id"]]  # a history: the tower runs, then the blend
    body = {"user_id": "u", "k": 146, "history": history, "filters": {"genres_any": ["nope"]}}
    async with serve(settings) as (_, http):
        response = await http.post("/v1/recommend", json=body, headers={"X-Duet-Arm": "popular"})
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []
