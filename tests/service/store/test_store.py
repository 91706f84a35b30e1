"""The same behaviour from every store: Redis (a real single node and a real 3-master cluster,
each with and without the in-process layer) and in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from service.settings import Settings
from service.store import MemoryStore, RedisStore, Store
from service.store.breaker import CircuitBreaker

HISTORY_LENGTH = 5
SEEN_MAX = 12


@pytest_asyncio.fixture(params=["memory", "redis", "redis+local", "cluster", "cluster+local"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(
            history_length=HISTORY_LENGTH, cache_ttl_seconds=60, seen_max_items=SEEN_MAX
        )
        return
    cluster = request.param.startswith("cluster")
    url = request.getfixturevalue("cluster_url" if cluster else "redis_url")
    settings = Settings(
        redis_url=url,
        redis_mode="cluster" if cluster else "single",
        redis_timeout_ms=200,
        redis_max_connections=8,
        history_length=HISTORY_LENGTH,
        history_ttl_seconds=3_600,
        cache_ttl_seconds=60,
        local_cache_size=100 if request.param.endswith("+local") else 0,
        seen_max_items=SEEN_MAX,
    )
    redis_store = RedisStore(settings, breaker=CircuitBreaker(failures=3, cooldown_seconds=1))
    assert await redis_store.connect()
    yield redis_store
    await redis_store.close()


def _vector(seed: int) -> bytes:
    return np.random.default_rng(seed).normal(size=8).astype(np.float32).tobytes()


async def test_unknown_user_is_empty(store: Store) -> None:
    state = await store.fetch("nobody", "v1")
    assert state.history == ()
    assert state.version == 0
    assert state.embedding is None


async def test_events_append_in_order_and_bump_the_version(store: Store) -> None:
    await store.append_events([("u1", "10"), ("u2", "99"), ("u1", "11")])
    await store.append_events([("u1", "12")])
    state = await store.fetch("u1", "v1")
    assert state.history == ("10", "11", "12")
    assert state.version == 3
    assert (await store.fetch("u2", "v1")).history == ("99",)


async def test_history_is_bounded_to_the_most_recent(store: Store) -> None:
    await store.append_events([("u", str(i)) for i in range(HISTORY_LENGTH + 3)])
    state = await store.fetch("u", "v1")
    assert state.history == tuple(str(i) for i in range(3, HISTORY_LENGTH + 3))


async def test_cached_embedding_round_trips_for_its_bundle_version_only(store: Store) -> None:
    await store.append_events([("u", "1")])
    version = (await store.fetch("u", "v1")).version
    await store.cache_embedding("u", "v1", version, _vector(0))
    assert (await store.fetch("u", "v1")).embedding == _vector(0)
    assert (await store.fetch("u", "v2")).embedding is None


async def test_an_event_invalidates_the_cached_embedding(store: Store) -> None:
    await store.append_events([("u", "1")])
    version = (await store.fetch("u", "v1")).version
    await store.cache_embedding("u", "v1", version, _vector(1))
    await store.append_events([("u", "2")])
    state = await store.fetch("u", "v1")
    assert state.embedding is None
    assert state.history == ("1", "2")


async def test_a_late_cache_write_from_an_old_version_is_never_served(store: Store) -> None:
    stale_version = (await store.fetch("u", "v1")).version
    await store.append_events([("u", "7")])  # arrives while the old embedding is computed
    await store.cache_embedding("u", "v1", stale_version, _vector(2))
    assert (await store.fetch("u", "v1")).embedding is None


async def test_health_reports_up(store: Store) -> None:
    assert await store.health() == "up"


async def test_seen_set_keeps_more_than_the_history_and_drops_the_oldest(store: Store) -> None:
    dropped = await store.append_events([("u", str(i)) for i in range(SEEN_MAX + 3)])
    state = await store.fetch("u", "v1")
    assert dropped == 3
    assert state.history == tuple(str(i) for i in range(SEEN_MAX - 2, SEEN_MAX + 3))
    assert state.seen == tuple(str(i) for i in range(3, SEEN_MAX + 3))


async def test_negatives_join_the_seen_set_but_never_the_history(store: Store) -> None:
    await store.append_events([("u", "1")])
    before = await store.fetch("u", "v1")
    await store.append_events([("u", "2")], negatives=[("u", "3"), ("w", "4")])
    state = await store.fetch("u", "v1")
    assert state.history == ("1", "2")
    assert state.seen == ("1", "2", "3")
    assert state.version > before.version
    assert (await store.fetch("w", "v1")).seen == ("4",)
    assert (await store.fetch("w", "v1")).history == ()


async def test_a_repeat_interaction_makes_an_item_the_newest_seen(store: Store) -> None:
    await store.append_events([("u", "1"), ("u", "2"), ("u", "1")])
    assert (await store.fetch("u", "v1")).seen == ("2", "1")


async def test_a_batch_of_many_users_lands_for_each(store: Store) -> None:
    """On a cluster the users of one batch live in different slots (one script call each)."""
    users = [f"user-{n}" for n in range(40)]
    await store.append_events([(user, f"i{n}") for n, user in enumerate(users)])
    await store.append_events([(users[0], "again")], negatives=[(users[1], "no")])
    for n, user in enumerate(users):
        state = await store.fetch(user, "v1")
        expected = (f"i{n}", "again") if n == 0 else (f"i{n}",)
        assert state.history == expected
    assert (await store.fetch(users[1], "v1")).seen == ("i1", "no")


async def test_a_batch_of_embeddings_is_cached_for_each_user(store: Store) -> None:
    from service.store.base import EmbeddingWrite

    users = [f"emb-{n}" for n in range(20)]
    await store.cache_embeddings(
        [EmbeddingWrite(u, "v9", 0, _vector(n)) for n, u in enumerate(users)]
    )
    for n, user in enumerate(users):
        assert (await store.fetch(user, "v9")).embedding == _vector(n)
