"""POST /v1/retrieve and GET /v1/items/{item_id}/similar."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from tests.service.api.helpers import items


async def test_similar_items_exclude_the_item_itself(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    item = items(bundle_dir)[5]["item_id"]
    response = await client.get(f"/v1/items/{item}/similar", params={"k": 8})
    assert response.status_code == 200
    body = response.json()
    returned = [i["item_id"] for i in body["items"]]
    assert len(returned) == 8
    assert item not in returned


async def test_similar_to_an_unknown_item_is_404_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/items/no-such-item/similar")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "item_id"


async def test_retrieve_by_item_matches_similar(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    item = items(bundle_dir)[7]["item_id"]
    by_route = (await client.get(f"/v1/items/{item}/similar", params={"k": 5})).json()
    by_body = (await client.post("/v1/retrieve", json={"item_id": item, "k": 5})).json()
    assert [i["item_id"] for i in by_body["items"]] == [i["item_id"] for i in by_route["items"]]


async def test_retrieve_by_embedding_ranks_by_inner_product(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    embeddings = np.load(bundle_dir / "item_embeddings.npy")
    query = embeddings[12]
    response = await client.post("/v1/retrieve", json={"embedding": query.tolist(), "k": 5})
    assert response.status_code == 200
    expected = np.argsort(-(embeddings @ query))[:5]
    catalog = items(bundle_dir)
    assert [i["item_id"] for i in response.json()["items"]] == [
        catalog[r]["item_id"] for r in expected
    ]


async def test_retrieve_by_a_huge_embedding_ranks_the_same_with_finite_scores(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    """Values near float32's limit would overflow the inner products (scores came back null)."""
    embeddings = np.load(bundle_dir / "item_embeddings.npy")
    query = embeddings[7].astype(np.float64)
    huge = (query / np.abs(query).max() * 3.0e38).tolist()
    small = (await client.post("/v1/retrieve", json={"embedding": query.tolist(), "k": 5})).json()
    response = await client.post("/v1/retrieve", json={"embedding": huge, "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in small["items"]]
    assert all(isinstance(i["score"], float) and abs(i["score"]) <= 1.0001 for i in body["items"])


async def test_retrieve_by_history_excludes_the_history(
    client: httpx.AsyncClient, bundle_dir: Path
) -> None:
    history = [i["item_id"] for i in items(bundle_dir)[20:25]]
    body = (await client.post("/v1/retrieve", json={"history": history, "k": 10})).json()
    assert len(body["items"]) == 10
    assert not set(history) & {i["item_id"] for i in body["items"]}


async def test_retrieve_with_a_wrong_dimension_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/retrieve", json={"embedding": [0.1, 0.2]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "embedding"
