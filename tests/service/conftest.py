"""Session fixtures: one tiny real bundle (built by `models`), one real Redis, one real Redis
Cluster (3 masters + 3 replicas, started on first use); per-test apps.

The bundle is trained on a few hundred synthetic users and items in a few seconds; tests that
corrupt bundles work on copies. Tests talk to the app through httpx's ASGI transport with the
real lifespan, and to `redis-server`s this session starts on free ports.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from loadtest.redis_cluster import LocalCluster
from service.app import create_app
from service.settings import Settings
from tests.service.redis_server import RedisServer, free_port

NUM_USERS, NUM_ITEMS = 300, 400


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.datasets import synthesize
    from models.pipeline import build
    from models.train import TrainConfig

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    dataset = synthesize(NUM_USERS, NUM_ITEMS, seed=0)
    build(dataset, out, config=TrainConfig.tiny(max_epochs=1), with_baselines=False, progress=False)
    return out


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private copy to corrupt."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    return copy


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied for this test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The session cluster, emptied (and its script caches too) for this test."""
    redis_cluster.wait_ok()
    redis_cluster.flushall()
    return redis_cluster.url


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its real lifespan, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://duet") as client:
            yield app, client


@pytest_asyncio.fixture
async def client(bundle_dir: Path, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A ready app on the tiny bundle and the session Redis."""
    async with serve(Settings(bundle=bundle_dir, redis_url=redis_url)) as (_, http):
        yield http
