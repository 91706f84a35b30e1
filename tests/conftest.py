"""Session fixtures shared by models and service tests: one tiny real bundle (built by
`models`) and one real Redis on a free port.

The bundle is trained on a few hundred synthetic users and items in a few seconds; tests that
corrupt bundles work on copies.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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
