"""The request path without HTTP: plain values in and out, real bundle, real stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.arms import Arm
from service.catalog.bundle import Bundle, load_bundle
from service.recommender import Event, Recommender, RecommendQuery
from service.settings import Settings
from service.store import MemoryStore, RedisStore
from service.store.base import EmbeddingWrite
from service.store.breaker import CircuitBreaker
from tests.service.redis_server import free_port


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture
def arm(bundle: Bundle) -> Arm:
    return Arm("default", bundle)


def _memory() -> Recommender:
    return Recommender(MemoryStore(history_length=50, cache_ttl_seconds=60))


async def test_known_user_is_personalised_and_cached(arm: Arm, bundle: Bundle) -> None:
    service = _memory()
    user = next(iter(bundle.catalog.users))
    first = await service.recommend(arm, RecommendQuery(user_id=user, k=5), "r1")
    assert first.fallback is None
    assert first.request_id == "r1"
    assert len(first.items) == 5
    await service.drain()
    state = await service.store.fetch(user, bundle.version)
    assert state.embedding is not None  # written in the background after the answer
    second = await service.recommend(arm, RecommendQuery(user_id=user, k=5), "r2")
    assert [i.item_id for i in second.items] == [i.item_id for i in first.items]


class _CountingStore(MemoryStore):
    """The embedded store, counting its cache-write calls."""

    def __init__(self) -> None:
        super().__init__(history_length=50, cache_ttl_seconds=60)
        self.batches: list[int] = []

    async def cache_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None:
        self.batches.append(len(writes))
        await super().cache_embeddings(writes)


async def test_concurrent_misses_share_one_cache_write(arm: Arm, bundle: Bundle) -> None:
    store = _CountingStore()
    service = Recommender(store)
    users = list(bundle.catalog.users)[:6]
    queries = [service.recommend(arm, RecommendQuery(user_id=u), f"r{u}") for u in users]
    await asyncio.gather(*queries)
    await service.drain()
    assert sum(store.batches) == len(users)
    assert len(store.batches) < len(users)  # misses of one loop iteration travel together
    for user in users:
        assert (await store.fetch(user, bundle.version)).embedding is not None


async def test_cold_start_follows_popularity_minus_exclusions(arm: Arm, bundle_dir: Path) -> None:
    popular = [p["item_id"] for p in json.loads((bundle_dir / "popularity.json").read_text())]
    query = RecommendQuery(user_id="nobody", k=3, exclude_item_ids=(popular[0],))
    result = await _memory().recommend(arm, query, "r")
    assert result.fallback == "cold_start"
    assert [i.item_id for i in result.items] == popular[1:4]


async def test_ingested_events_become_history_and_are_excluded(arm: Arm, bundle: Bundle) -> None:
    service = _memory()
    seen = tuple(bundle.catalog.item_ids[row] for row in range(3))
    await service.ingest(
        [Event("anon", item, "view", timestamp=float(100 - n)) for n, item in enumerate(seen)],
        bundle.catalog,
    )
    state = await service.store.fetch("anon", bundle.version)
    assert state.history == tuple(reversed(seen))  # ordered by timestamp
    result = await service.recommend(arm, RecommendQuery(user_id="anon", k=20), "r")
    assert result.fallback is None
    assert not set(seen) & {i.item_id for i in result.items}


async def test_a_dead_store_degrades_to_the_request_history(arm: Arm, bundle: Bundle) -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        redis_timeout_ms=20,
        redis_max_connections=2,
        history_length=10,
        history_ttl_seconds=60,
        cache_ttl_seconds=60,
        local_cache_size=0,
    )
    store = RedisStore(settings, breaker=CircuitBreaker(failures=1, cooldown_seconds=60))
    service = Recommender(store)
    history = tuple(bundle.catalog.item_ids[row] for row in (10, 11))
    query = RecommendQuery(user_id="someone", k=4, history=history)
    try:
        result = await service.recommend(arm, query, "r")
        assert result.fallback == "store_unavailable"
        assert len(result.items) == 4
        assert not set(history) & {i.item_id for i in result.items}
    finally:
        await store.close()
