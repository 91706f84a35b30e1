"""Every bundle fault, served for real: at startup the app is alive but not ready (and says
why); at reload it is refused with a 4xx while the old bundle keeps answering every request.

In-process apps with their real lifespan (`serve`) on copies of the session's tiny bundle.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import onnx
import pytest
from onnx.external_data_helper import convert_model_to_external_data, uses_external_data

from service.settings import Settings
from tests.service.api.helpers import users, version
from tests.service.catalog.test_bundle import _manifest, _rehash, _write_manifest
from tests.service.conftest import serve

TOKEN = "test-admin-token-0123456789"  # noqa: S105 (a test secret)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def truncated_onnx(bundle: Path) -> None:
    path = bundle / "user_tower.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _rehash(bundle, "user_tower.onnx")  # the checksum agrees: ONNX itself must refuse it


def flipped_byte(bundle: Path) -> None:
    path = bundle / "items.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def wrong_dimension(bundle: Path) -> None:
    manifest = _manifest(bundle)
    manifest["embedding_dim"] += 1
    _write_manifest(bundle, manifest)


def index_count_off(bundle: Path) -> None:
    manifest = _manifest(bundle)
    index = faiss.IndexFlatIP(manifest["embedding_dim"])
    index.add(np.zeros((manifest["num_items"] - 1, manifest["embedding_dim"]), np.float32))
    faiss.write_index(index, str(bundle / "items.faiss"))
    _rehash(bundle, "items.faiss")


def truncated_npy(bundle: Path) -> None:
    """A mapped file cut short, with a manifest that agrees: the array header no longer fits."""
    path = bundle / "item_embeddings.npy"
    path.write_bytes(path.read_bytes()[:-64])
    _rehash(bundle, "item_embeddings.npy")


def ids_count_off(bundle: Path) -> None:
    """One item id fewer than the index holds vectors."""
    offsets = np.load(bundle / "item_ids.offsets.npy")
    np.save(bundle / "item_ids.offsets.npy", offsets[:-1], allow_pickle=False)
    np.save(bundle / "item_ids.npy", np.load(bundle / "item_ids.npy")[: offsets[-2]])
    for name in ("item_ids.npy", "item_ids.offsets.npy"):
        _rehash(bundle, name)


def missing_file(bundle: Path) -> None:
    (bundle / "popularity.json").unlink()


def external_data(bundle: Path) -> None:
    """The user tower's weights moved to a file outside the bundle (onnx refuses to write this,
    so the locations are rewritten in the proto by hand)."""
    path = bundle / "user_tower.onnx"
    model = onnx.load(str(path))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            tensor.ClearField("raw_data")
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../outside.bin"
    path.write_bytes(model.SerializeToString())
    _rehash(bundle, "user_tower.onnx")


def symlink_out(bundle: Path) -> None:
    outside = bundle.parent / "elsewhere.npy"
    shutil.copyfile(bundle / "item_titles.npy", outside)
    (bundle / "item_titles.npy").unlink()
    (bundle / "item_titles.npy").symlink_to(outside)


def unknown_field(bundle: Path) -> None:
    manifest = _manifest(bundle)
    manifest["embeding_dim"] = 8  # a typo must not pass silently
    _write_manifest(bundle, manifest)


def missing_field(bundle: Path) -> None:
    manifest = _manifest(bundle)
    del manifest["metric"]
    _write_manifest(bundle, manifest)


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated_onnx": (truncated_onnx, "user_tower.onnx: ONNX model is not a valid protobuf"),
    "flipped_byte": (flipped_byte, "items.faiss: sha256 mismatch"),
    "wrong_dimension": (wrong_dimension, "embedding_dim"),
    "index_count": (index_count_off, "vectors"),
    "truncated_npy": (truncated_npy, "item_embeddings.npy: not a plain .npy array"),
    "ids_count": (ids_count_off, "item_ids / item_titles / item_genres do not hold"),
    "missing_file": (missing_file, "popularity.json: listed in the manifest but missing"),
    "external_data": (external_data, "user_tower.onnx: ONNX model references external data"),
    "symlink": (symlink_out, "leaves the bundle"),
    "unknown_field": (unknown_field, "embeding_dim"),
    "missing_field": (missing_field, "metric"),
}


@pytest.fixture(params=sorted(FAULTS))
def fault(request: pytest.FixtureRequest, bundle_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A faulty copy of the tiny bundle and a fragment of the reason it must be refused for."""
    corrupt, reason = FAULTS[request.param]
    bundle = tmp_path / "faulty" / "bundle"
    shutil.copytree(bundle_dir, bundle)
    corrupt(bundle)
    return bundle, reason


async def test_startup_is_alive_not_ready_and_says_why(
    fault: tuple[Path, str], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, reason = fault
    with caplog.at_level(logging.ERROR, logger="service"):
        async with serve(Settings(bundle=bundle, redis_url=redis_url)) as (_, client):
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            recommend = await client.post("/v1/recommend", json={"user_id": "1", "k": 3})
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["reason"].startswith("bundle rejected")
    assert reason in ready.json()["reason"]
    assert recommend.status_code == 503
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(line.startswith("not ready") and reason in line for line in logged), logged


async def test_reload_is_refused_and_the_old_bundle_keeps_serving(
    fault: tuple[Path, str], bundle_dir: Path, redis_url: str
) -> None:
    bundle, reason = fault
    settings = Settings(bundle=bundle_dir, redis_url=redis_url, admin_token=TOKEN)
    everyone = users(bundle_dir)
    async with serve(settings) as (_, client):

        async def load() -> list[tuple[int, str]]:
            answers = []
            for index in range(25):
                user = everyone[index % len(everyone)]
                response = await client.post("/v1/recommend", json={"user_id": user, "k": 5})
                answers.append((response.status_code, response.json().get("model_version")))
            return answers

        reload, *loads = await asyncio.gather(
            client.post("/admin/bundles/reload", headers=AUTH, json={"bundle": str(bundle)}),
            load(),
            load(),
        )
        listing = (await client.get("/admin/bundles", headers=AUTH)).json()
        after = await client.post("/v1/recommend", json={"user_id": everyone[0], "k": 5})

    assert reload.status_code == 422
    assert reload.json()["error"]["code"] == "reload_rejected"
    assert reason in reload.json()["error"]["message"]
    assert {answer for answers in loads for answer in answers} == {(200, version(bundle_dir))}
    assert [arm["bundle_version"] for arm in listing["arms"]] == [version(bundle_dir)]
    assert reason in listing["reload"]["last_error"]
    assert after.status_code == 200
    assert after.json()["model_version"] == version(bundle_dir)
