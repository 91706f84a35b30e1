"""Redis-specific failure behaviour: a dead server costs milliseconds, then nothing (breaker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis
import redis.asyncio as aioredis

from service.errors import StoreUnavailableError
from service.settings import Settings
from service.store import RedisStore
from service.store.breaker import CircuitBreaker
from service.store.clients import open_client
from tests.service.redis_server import RedisServer, free_port


def _settings(url: str, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "redis_url": url, "redis_timeout_ms": 30, "redis_max_connections": 4,
        "history_length": 10, "history_ttl_seconds": 3_600, "cache_ttl_seconds": 60,
        "local_cache_size": 0,
    }  # fmt: skip
    return Settings(**{**fields, **overrides})  # type: ignore[arg-type]


def _store(url: str, breaker: CircuitBreaker) -> RedisStore:
    return RedisStore(_settings(url), breaker=breaker)


async def test_dead_redis_fails_fast_then_the_breaker_refuses_without_io() -> None:
    server = RedisServer(free_port()).start()
    breaker = CircuitBreaker(failures=2, cooldown_seconds=0.3)
    store = _store(server.url, breaker)
    try:
        await store.append_events([("u", "1")])
        server.stop()
        for _ in range(2):
            started = time.perf_counter()
            with pytest.raises(StoreUnavailableError):
                await store.fetch("u", "v")
            assert time.perf_counter() - started < 0.5
        assert breaker.state == "open"
        assert await store.health() == "breaker_open"
        with pytest.raises(StoreUnavailableError, match="breaker open"):
            await store.append_events([("u", "2")])

        server.start()  # same port; the half-open probe closes the breaker
        await asyncio.sleep(0.35)
        state = await store.fetch("u", "v")
        assert breaker.state == "closed"
        assert state.history == ()  # a fresh server: the events were in the old one's memory
    finally:
        await store.close()
        server.stop()


async def test_slow_redis_times_out_within_the_deadline(redis_server: RedisServer) -> None:
    store = _store(redis_server.url, CircuitBreaker(failures=5, cooldown_seconds=1))
    try:
        await store.fetch("u", "v")  # connection established while Redis is quick
        with redis_server.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", "300", "ALL")
        started = time.perf_counter()
        with pytest.raises(StoreUnavailableError):
            await store.fetch("u", "v")
        assert time.perf_counter() - started < 0.2
    finally:
        await asyncio.sleep(0.3)
        await store.close()


async def test_fetch_survives_a_flushed_script_cache(redis_url: str) -> None:
    store = _store(redis_url, CircuitBreaker(failures=5, cooldown_seconds=1))
    try:
        await store.append_events([("u", "1"), ("u", "2")])
        assert (await store.fetch("u", "v")).history == ("1", "2")
        with redis.Redis.from_url(redis_url) as admin:
            admin.script_flush()
        assert (await store.fetch("u", "v")).history == ("1", "2")
        assert store.breaker.state == "closed"
    finally:
        await store.close()


async def test_an_exhausted_pool_is_refused_without_tripping_the_breaker(redis_url: str) -> None:
    breaker = CircuitBreaker(failures=1, cooldown_seconds=60)
    store = RedisStore(
        _settings(redis_url, redis_timeout_ms=500, redis_max_connections=1), breaker=breaker
    )
    try:
        results = await asyncio.gather(
            *(store.fetch(f"u{n}", "v") for n in range(4)), return_exceptions=True
        )
        assert any(isinstance(r, StoreUnavailableError) for r in results)
        assert breaker.state == "closed"
    finally:
        await store.close()


def _worker(url: str, mode: str = "single") -> RedisStore:
    settings = _settings(url, redis_timeout_ms=500, local_cache_size=100, redis_mode=mode)
    return RedisStore(settings, breaker=CircuitBreaker(failures=5, cooldown_seconds=1))


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.mark.parametrize("mode", ["single", "cluster"])
async def test_local_layer_serves_repeats_and_sees_other_workers_events(
    mode: str, request: pytest.FixtureRequest
) -> None:
    """The other worker's event reaches this one's local layer: on a cluster too, where the
    user's keys live on one master and this worker listens on whichever node it picked."""
    url = request.getfixturevalue("cluster_url" if mode == "cluster" else "redis_url")
    first, second = _worker(url, mode), _worker(url, mode)
    try:
        assert await first.connect() and await second.connect()

        async def listening() -> bool:
            await first.fetch("warmup", "v")
            return first._listener is not None and first._listener.healthy

        assert await _until(listening)
        await first.append_events([("u", "1")])
        state = await first.fetch("u", "v")
        await first.cache_embedding("u", "v", state.version, b"\x00" * 16)
        local = await first.fetch("u", "v")
        assert local.layer == "local"
        assert local.embedding == b"\x00" * 16

        await second.append_events([("u", "2")])  # another worker takes an event

        async def fresh() -> bool:
            return (await first.fetch("u", "v")).history == ("1", "2")

        assert await _until(fresh, seconds=1.0)
        again = await first.fetch("u", "v")
        assert again.embedding is None  # the old embedding belongs to the old history
        assert again.layer == ""
    finally:
        await first.close()
        await second.close()


async def test_local_layer_is_bypassed_while_redis_is_down() -> None:
    server = RedisServer(free_port()).start()
    store = _worker(server.url)
    try:
        await store.append_events([("u", "1")])

        async def listening() -> bool:
            await store.fetch("u", "v")
            return store._listener is not None and store._listener.healthy

        assert await _until(listening)
        version = (await store.fetch("u", "v")).version
        await store.cache_embedding("u", "v", version, b"\x01" * 16)
        assert (await store.fetch("u", "v")).layer == "local"
        server.stop()

        async def bypassed() -> bool:
            try:
                await store.fetch("u", "v")
            except StoreUnavailableError:
                return True
            return False

        assert await _until(bypassed)
    finally:
        await store.close()
        server.stop()


async def test_the_fetch_carries_the_bundles_catalog_version(redis_url: str) -> None:
    """The live catalog's counter rides the one fetch round trip (0 before any change)."""
    from service.store.keys import catalog_version as catalog_version_key

    store = _store(redis_url, CircuitBreaker(failures=5, cooldown_seconds=1))
    try:
        assert (await store.fetch("u", "v1")).catalog_version == 0
        with redis.Redis.from_url(redis_url) as client:
            client.set(catalog_version_key("v1"), 7)
        assert (await store.fetch("u", "v1")).catalog_version == 7
        assert (await store.fetch("u", "v2")).catalog_version == 0
    finally:
        await store.close()


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "duet:{u1}:h", "duet:{u1}:v", -50, 1.5),
        ("CLIENT SETNAME", "duet"),  # a command name with a space is split, as redis-py does
        (b"SET", memoryview(b"\x00\xff"), bytearray(b"v")),
        ("XADD", "duet:exposures", "*", *(str(n) for n in range(60))),
    ],
)
def test_single_node_connections_pack_in_c_the_bytes_redis_py_packs(args: tuple[object]) -> None:
    client = open_client(_settings("redis://127.0.0.1:1/0"), connect_timeout=1.0, max_connections=2)
    packed_class = client.connection_pool.connection_class
    assert packed_class.__name__ == "HiredisConnection"
    ours = b"".join(bytes(p) for p in packed_class().pack_command(*args))
    theirs = b"".join(bytes(p) for p in aioredis.Connection().pack_command(*args))
    assert ours == theirs


async def test_packed_commands_round_trip_through_a_real_server(redis_url: str) -> None:
    client = open_client(_settings(redis_url), connect_timeout=1.0, max_connections=2)
    try:
        blob = bytes(range(256))
        await client.execute_command("SET", "duet:test:{packed}", memoryview(blob))
        assert await client.execute_command("GET", "duet:test:{packed}") == blob
        assert await client.eval("return ARGV[1] .. #KEYS", 1, "k", "é") == "é1".encode()
    finally:
        await client.aclose()
