"""Redis-specific failure behaviour: a dead server costs milliseconds, then nothing (breaker)."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.errors import StoreUnavailableError
from service.store import RedisStore
from service.store.breaker import CircuitBreaker
from tests.service.redis_server import RedisServer, free_port


def _store(url: str, breaker: CircuitBreaker) -> RedisStore:
    return RedisStore(
        url,
        timeout_ms=30,
        max_connections=4,
        history_length=10,
        history_ttl_seconds=3_600,
        cache_ttl_seconds=60,
        breaker=breaker,
    )


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
