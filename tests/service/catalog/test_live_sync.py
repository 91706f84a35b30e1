"""Change log + sync against a real Redis and in-process: two workers, replay, consistency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from service.catalog.bundle import Bundle, load_bundle
from service.catalog.changes import Change, ChangeLog, MemoryChangeLog, RedisChangeLog
from service.catalog.item_embedder import ItemEmbedder
from service.catalog.live import LiveDelta
from service.catalog.live_sync import LiveSync
from service.errors import StoreUnavailableError


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


def _worker(bundle: Bundle, changes: ChangeLog) -> LiveSync:
    embedder = ItemEmbedder.for_bundle(bundle)
    delta = LiveDelta(bundle.catalog.rows, bundle.manifest.embedding_dim)
    return LiveSync(bundle.version, delta, embedder, changes, block_ms=200)


@pytest_asyncio.fixture(params=["memory", "redis"])
async def logs(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[list[ChangeLog]]:
    """Two handles on one log (two workers' connections); the memory log is shared in-process."""
    if request.param == "memory":
        shared = MemoryChangeLog()
        yield [shared, shared]
    else:
        pair: list[ChangeLog] = [RedisChangeLog(redis_url), RedisChangeLog(redis_url)]
        yield pair
        for one in pair:
            await one.close()


def _new(item_id: str) -> Change:
    return Change("upsert", item_id, {"title": f"Film {item_id} (2030)", "genres": ["Drama"]})


async def test_append_read_version_item(logs: list[ChangeLog]) -> None:
    log = logs[0]
    assert await log.append("v1", [_new("a"), _new("b")]) == 2
    assert await log.append("v1", [Change("delete", "a", {})]) == 3
    assert await log.version("v1") == 3 and await log.version("other") == 0
    read = await log.read("v1", "0-0")
    assert [(c.op, c.item_id) for c in read] == [("upsert", "a"), ("upsert", "b"), ("delete", "a")]
    assert [c.item_id for c in await log.read("v1", read[0].position)] == ["b", "a"]
    assert await log.item("v1", "a") is None
    assert (await log.item("v1", "b") or {})["genres"] == ["Drama"]
    assert await log.read("v1", read[-1].position, block_ms=50) == []


async def test_replay_then_catch_up_makes_a_delete_visible_at_once(
    bundle: Bundle, logs: list[ChangeLog]
) -> None:
    doomed = bundle.catalog.item_ids[0]
    await logs[0].append(bundle.version, [_new("n1"), _new("n2")])
    one, two = _worker(bundle, logs[0]), _worker(bundle, logs[1])
    await one.replay()
    await two.replay()
    assert one.delta.item("n1") is not None and two.delta.item("n2") is not None
    version = await logs[0].append(
        bundle.version, [Change("delete", doomed, {}), Change("delete", "n1", {})]
    )
    for worker in (one, two):  # what the recommend path does with the version it read
        await worker.catch_up(version)
        assert 0 in worker.delta.tombstoned_rows() and worker.delta.item("n1") is None


async def test_tail_applies_an_upsert_within_one_second_in_both(
    bundle: Bundle, logs: list[ChangeLog]
) -> None:
    workers = [_worker(bundle, logs[0]), _worker(bundle, logs[1])]
    for w in workers:
        await w.replay()
        w.start()
    try:
        started = time.perf_counter()
        await logs[0].append(bundle.version, [_new("fresh")])
        while any(w.delta.item("fresh") is None for w in workers):
            assert time.perf_counter() - started < 1.0
            await asyncio.sleep(0.01)
        query = workers[0].delta.search_delta(np.ones(bundle.manifest.embedding_dim), 1)
        assert query[0][0] == "fresh"
    finally:
        for w in workers:
            await w.stop()


async def test_redis_failure_is_store_unavailable_and_nothing_logged() -> None:
    from tests.service.redis_server import free_port

    dead = RedisChangeLog(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    with pytest.raises(StoreUnavailableError):
        await dead.append("v1", [_new("x")])
    await dead.close()
