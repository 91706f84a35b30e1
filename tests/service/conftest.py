"""Service fixtures: one real Redis Cluster (3 masters + 3 replicas, started on first use) and
per-test apps; the tiny bundle and the single Redis are in tests/conftest.py (models uses them).

Tests talk to the app through httpx's ASGI transport with the real lifespan, and to
`redis-server`s this session starts on free ports.
"""

from __future__ import annotations

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
from tests.conftest import NUM_ITEMS, NUM_USERS

__all__ = ["NUM_ITEMS", "NUM_USERS", "serve"]


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
