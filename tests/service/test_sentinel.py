"""DUET_REDIS_MODE=sentinel against a real redis-server and a real sentinel (redis-server
--sentinel): the master is found through the sentinel, and the service serves on it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.settings import Settings
from tests.service.api.helpers import items, users
from tests.service.conftest import serve
from tests.service.redis_server import RedisServer, free_port


@pytest.fixture
def sentinel(redis_url: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A sentinel watching the session Redis as master `duet-master`; its port."""
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor duet-master 127.0.0.1 {redis_server.port} 1\n"
    )
    binary = shutil.which("redis-server")
    assert binary
    process = subprocess.Popen(
        [binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(redis.RedisError),
                redis.Redis(port=port, socket_timeout=0.3) as probe,
            ):
                if probe.sentinel_get_master_addr_by_name("duet-master"):
                    break
            assert time.monotonic() < deadline, "the sentinel never answered"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_the_service_finds_its_master_through_the_sentinel(
    bundle_dir: Path, sentinel: int, redis_server: RedisServer
) -> None:
    settings = Settings(
        bundle=bundle_dir,
        redis_mode="sentinel",
        redis_sentinels=f"127.0.0.1:{sentinel}",
        redis_master_name="duet-master",
    )
    user, item = users(bundle_dir)[0], items(bundle_dir)[0]["item_id"]
    async with serve(settings) as (app, client):
        deadline = time.monotonic() + 10
        while (ready := await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.json()
            await asyncio.sleep(0.05)
        assert ready.json()["store"] == {"backend": "redis", "state": "up"}
        event = {"user_id": user, "item_id": item, "type": "click"}
        assert (await client.post("/v1/events", json=event)).status_code == 202
        answer = (await client.post("/v1/recommend", json={"user_id": user})).json()
        assert answer["fallback"] is None
        assert app.state.fanout is not None
    with redis_server.client() as admin:
        assert admin.lrange(f"duet:{{u:{user}}}:hist", 0, -1) == [item.encode()]


def test_sentinel_mode_needs_its_settings() -> None:
    with pytest.raises(ValueError, match="DUET_REDIS_SENTINELS and DUET_REDIS_MASTER_NAME"):
        Settings(redis_mode="sentinel")
    with pytest.raises(ValueError, match="DUET_REDIS_MODE=cluster needs DUET_REDIS_URL"):
        Settings(redis_mode="cluster")
    with pytest.raises(ValueError, match="only db 0"):
        Settings(redis_mode="cluster", redis_url="redis://127.0.0.1:7000/3")
