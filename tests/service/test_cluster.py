"""The service on a real Redis Cluster (3 masters + 3 replicas): serving, reload fan-out across
nodes, a cluster that is unreachable at start, a mode that contradicts the server, and a
resharding under load (MOVED/ASK) with no 5xx."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from loadtest.redis_cluster import LocalCluster
from service.settings import Settings
from service.store.clients import RedisModeError
from tests.service.api.helpers import items, users
from tests.service.conftest import serve
from tests.service.redis_server import RedisServer, free_port
from tests.service.test_broadcast import AUTH, TOKEN, eventually, with_version, write_config


def cluster_settings(url: str, **extra: object) -> Settings:
    return Settings(redis_url=url, redis_mode="cluster", **extra)  # type: ignore[arg-type]


async def ready(client: httpx.AsyncClient, seconds: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get("/readyz")
        if response.status_code == 200:
            return dict(response.json())
        assert time.monotonic() < deadline, response.json()
        await asyncio.sleep(0.05)


async def test_recommend_events_and_the_report_on_a_cluster(
    bundle_dir: Path, cluster_url: str
) -> None:
    user = users(bundle_dir)[0]
    item = items(bundle_dir)[0]["item_id"]
    async with serve(cluster_settings(cluster_url, bundle=bundle_dir)) as (_, client):
        body = await ready(client)
        assert body["store"] == {"backend": "redis", "state": "up"}
        event = {"user_id": user, "item_id": item, "type": "click"}
        assert (await client.post("/v1/events", json=event)).status_code == 202
        answer = (await client.post("/v1/recommend", json={"user_id": user})).json()
        assert answer["fallback"] is None
        assert item not in {i["item_id"] for i in answer["items"]}
        for other in users(bundle_dir)[1:30]:
            assert (await client.post("/v1/recommend", json={"user_id": other})).status_code == 200
        report = (await client.get("/v1/experiments/default/report")).json()
        assert report["arms"][0]["exposures"] == 30
        assert report["arms"][0]["users"] == 30
    with redis.RedisCluster.from_url(cluster_url) as admin:
        assert admin.lrange(f"duet:{{u:{user}}}:hist", 0, -1) == [item.encode()]


async def test_a_reload_reaches_a_worker_subscribed_on_another_node(
    bundle_dir: Path, cluster_url: str, redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Classic PUBLISH is broadcast over the cluster bus: the workers' startup nodes (where
    each publishes and subscribes) are two different masters."""
    with_version(bundle_dir, tmp_path / "v1", "cl-v1")
    with_version(bundle_dir, tmp_path / "v2", "cl-v2")
    config = tmp_path / "experiment.toml"
    write_config(config, "v1")
    first, second = redis_cluster.master_ports()[:2]
    one_settings, two_settings = (
        cluster_settings(f"redis://127.0.0.1:{port}/0", experiments=config, admin_token=TOKEN)
        for port in (first, second)
    )
    async with serve(one_settings) as (one, client), serve(two_settings) as (two, _):
        for app in (one, two):
            await asyncio.wait_for(app.state.fanout.subscribed.wait(), timeout=10)
        write_config(config, "v2")
        response = await client.post("/admin/bundles/reload", headers=AUTH)
        assert response.status_code == 200
        await eventually(two, "b", "cl-v2")


async def test_unreachable_cluster_at_start_serves_fallbacks_and_is_not_ready(
    bundle_dir: Path,
) -> None:
    settings = cluster_settings(
        f"redis://127.0.0.1:{free_port()}/0", bundle=bundle_dir, redis_timeout_ms=30
    )
    user = users(bundle_dir)[0]
    async with serve(settings) as (_, client):
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["reason"] == "Redis has not answered since start"
        assert body["store"]["backend"] == "redis"
        assert body["store"]["state"] in ("down", "breaker_open")
        for _ in range(3):
            answer = await client.post("/v1/recommend", json={"user_id": user})
            assert answer.status_code == 200
            assert answer.json()["fallback"] == "store_unavailable"
        event = {"user_id": user, "item_id": "x", "type": "click"}
        assert (await client.post("/v1/events", json=event)).status_code == 503


async def test_a_cluster_url_in_single_mode_is_refused_naming_the_setting(
    bundle_dir: Path, cluster_url: str
) -> None:
    settings = Settings(bundle=bundle_dir, redis_url=cluster_url)
    with pytest.raises(RedisModeError, match=r"^DUET_REDIS_MODE=single, but DUET_REDIS_URL"):
        async with serve(settings):
            pass


async def test_a_single_node_in_cluster_mode_is_refused_naming_the_setting(
    bundle_dir: Path, redis_url: str
) -> None:
    with pytest.raises(RedisModeError, match=r"^DUET_REDIS_MODE=cluster, but DUET_REDIS_URL"):
        async with serve(cluster_settings(redis_url, bundle=bundle_dir)):
            pass


def test_the_command_stops_with_one_line_on_a_mode_mismatch(
    bundle_dir: Path, redis_server: RedisServer
) -> None:
    env = {
        "DUET_BUNDLE": str(bundle_dir),
        "DUET_REDIS_URL": redis_server.url,
        "DUET_REDIS_MODE": "cluster",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service"], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("duet: DUET_REDIS_MODE=cluster, but DUET_REDIS_URL names a")


async def test_resharding_under_load_answers_no_5xx_and_keeps_every_event(
    bundle_dir: Path, cluster_url: str, redis_cluster: LocalCluster
) -> None:
    """`redis-cli --cluster reshard` moves slots (MOVED, ASK, TRYAGAIN) while recommends and
    events run; every answer is below 500 and every accepted event is in its history."""
    known = users(bundle_dir)
    item = items(bundle_dir)[0]["item_id"]
    settings = cluster_settings(cluster_url, bundle=bundle_dir, redis_timeout_ms=250)
    statuses: list[int] = []
    accepted: list[str] = []
    async with serve(settings) as (_, client):
        await ready(client)
        for user in known[:100]:  # keys in many slots, so the moved ones hold some
            await client.post("/v1/events", json={"user_id": user, "item_id": item})
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set() and n < 5_000:
                n += 1
                user = known[(worker * 7919 + n) % len(known)]
                response = await client.post("/v1/recommend", json={"user_id": user})
                statuses.append(response.status_code)
                new_user = f"reshard-{worker}-{n}"
                event = {"user_id": new_user, "item_id": item, "type": "click"}
                response = await client.post("/v1/events", json=event)
                statuses.append(response.status_code)
                if response.status_code == 202:
                    accepted.append(new_user)

        tasks = [asyncio.create_task(load(worker)) for worker in range(4)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(redis_cluster.reshard, 40)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    assert statuses
    assert max(statuses) < 500, sorted(set(statuses))
    assert len(accepted) > 20
    with redis.RedisCluster.from_url(cluster_url) as admin:
        pipe = admin.pipeline()
        for user in accepted:
            pipe.lrange(f"duet:{{u:{user}}}:hist", 0, -1)
        assert all(stored == [item.encode()] for stored in pipe.execute())
