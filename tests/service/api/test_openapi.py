"""The OpenAPI document states the rules that span fields, and the service keeps to them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from service.api.openapi import under_root
from tests.service.api.helpers import users


async def test_cross_field_rules_are_in_the_document(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    event = schemas["EventIn"]
    assert event["if"]["properties"]["type"] == {"const": "rating"}
    assert event["then"]["required"] == ["value"]
    assert event["then"]["properties"]["value"]["minimum"] == 0.5
    retrieve = schemas["RetrieveRequest"]
    assert [option["required"] for option in retrieve["oneOf"]] == [
        ["item_id"],
        ["embedding"],
        ["history"],
    ]
    dim = json.loads((bundle_dir / "manifest.json").read_text())["embedding_dim"]
    array = next(o for o in retrieve["properties"]["embedding"]["anyOf"] if o["type"] == "array")
    assert array["minItems"] == array["maxItems"] == dim
    reload = schemas["ReloadRequest"]["properties"]
    assert reload["arm"]["anyOf"][0]["enum"] == ["default"]
    assert re.match(reload["bundle"]["pattern"], "a" * 255)
    assert not re.match(reload["bundle"]["pattern"], "a" * 256)
    assert not re.match(reload["bundle"]["pattern"], "a\x00b")


async def test_what_the_schema_allows_is_accepted(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    user = users(bundle_dir)[0]
    whole = await client.post("/v1/recommend", json={"user_id": user, "k": 3.0})
    assert whole.status_code == 200 and len(whole.json()["items"]) == 3
    fraction = await client.post("/v1/recommend", json={"user_id": user, "k": 3.5})
    assert fraction.status_code == 422
    text = await client.post("/v1/recommend", json={"user_id": user, "k": "3"})
    assert text.status_code == 422
    inverted = {"user_id": user, "k": 5, "filters": {"year_min": 2000, "year_max": 1990.0}}
    empty = await client.post("/v1/recommend", json=inverted)
    assert empty.status_code == 200 and empty.json()["items"] == []


def test_the_bundle_pattern_keeps_paths_under_the_root(tmp_path: Path) -> None:
    pattern = under_root(tmp_path)
    inside = ["v1", "./v1", "a/b/", str(tmp_path), f"{tmp_path}/v2", ".hidden", "..x"]
    outside = ["..", "../x", "a/../../b", "/", "/etc", f"{tmp_path}x", "a" * 256]
    assert all(re.match(pattern, path) for path in inside)
    assert not any(re.match(pattern, path) for path in outside)
