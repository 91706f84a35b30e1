"""Two workers (two apps on one Redis): a reload accepted by one is repeated by the other."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI

from service.settings import Settings
from tests.service.conftest import serve

TOKEN = "test-admin-token-0123456789"  # noqa: S105 (a test secret)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def with_version(source: Path, target: Path, version: str) -> None:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["bundle_version"] = version
    (target / "manifest.json").write_text(json.dumps(manifest))


def write_config(path: Path, bundle: str) -> None:
    path.write_text(
        f'name = "exp"\nsalt = "s"\n[[arms]]\nname = "a"\nweight = 1\nbundle = "v1"\n'
        f'[[arms]]\nname = "b"\nweight = 1\nbundle = "{bundle}"\n'
    )


def versions(app: FastAPI) -> dict[str, str]:
    router = app.state.arms.current
    return {name: arm.bundle.version for name, arm in router.arms.items()}


async def eventually(app: FastAPI, arm: str, version: str) -> None:
    for _ in range(300):
        if versions(app)[arm] == version:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"arm {arm} never served {version}: {versions(app)}")


async def test_reload_reaches_every_worker(
    bundle_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    with_version(bundle_dir, tmp_path / "v1", "fan-v1")
    with_version(bundle_dir, tmp_path / "v2", "fan-v2")
    with_version(bundle_dir, tmp_path / "v3", "fan-v3")
    config = tmp_path / "experiment.toml"
    write_config(config, "v1")
    settings = Settings(experiments=config, redis_url=redis_url, admin_token=TOKEN)

    async with serve(settings) as (one, client), serve(settings) as (two, _):
        for app in (one, two):
            await asyncio.wait_for(app.state.fanout.subscribed.wait(), timeout=10)

        write_config(config, "v2")
        response = await client.post("/admin/bundles/reload", headers=AUTH)
        assert response.status_code == 200
        assert versions(one)["b"] == "fan-v2"
        await eventually(two, "b", "fan-v2")

        response = await client.post(
            "/admin/bundles/reload", headers=AUTH, json={"arm": "a", "bundle": "v3"}
        )
        assert response.status_code == 200
        await eventually(two, "a", "fan-v3")
        assert versions(two) == versions(one) == {"a": "fan-v3", "b": "fan-v2"}

        # a rejected reload is not announced: the other worker keeps its arms
        write_config(config, "missing")
        response = await client.post("/admin/bundles/reload", headers=AUTH)
        assert response.status_code == 422
        await asyncio.sleep(0.3)
        assert versions(two) == {"a": "fan-v3", "b": "fan-v2"}
