"""Redis store: redis.asyncio + hiredis, millisecond deadlines, no retries, a circuit breaker.

Keys (user ids are the dataset's own ids):
    duet:hist:{user}                 list of item ids, oldest first, LTRIM-bounded
    duet:ver:{user}                  history version, INCR on every append
    duet:emb:{bundle}:{user}         version (int64 LE) + float32 embedding, with a TTL
A recommend costs one pipelined round trip (LRANGE, GET, GET); an event batch one MULTI/EXEC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.errors import StoreUnavailableError
from service.store.base import Store, StoreHealth, UserState, pack_embedding, unpack_embedding
from service.store.breaker import CircuitBreaker

_FAILURES = (RedisError, OSError, TimeoutError)


def _hist(user_id: str) -> str:
    return f"duet:hist:{user_id}"


def _ver(user_id: str) -> str:
    return f"duet:ver:{user_id}"


def _emb(bundle_version: str, user_id: str) -> str:
    return f"duet:emb:{bundle_version}:{user_id}"


class RedisStore(Store):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        timeout_ms: int,
        max_connections: int,
        history_length: int,
        history_ttl_seconds: int,
        cache_ttl_seconds: int,
        breaker: CircuitBreaker,
    ) -> None:
        self._timeout = timeout_ms / 1000
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._history_length = history_length
        self._history_ttl = history_ttl_seconds
        self._cache_ttl = cache_ttl_seconds
        self.breaker = breaker

    async def _call(self, operation: Callable[[], Any], what: str) -> Any:
        """Run one round trip under the breaker and a hard deadline; failures become 503s."""
        if not self.breaker.allow():
            raise StoreUnavailableError(f"Redis circuit breaker open; {what} refused")
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation()
        except _FAILURES as exc:
            self.breaker.failure()
            reason = type(exc).__name__
            raise StoreUnavailableError(f"Redis unavailable during {what}: {reason}") from exc
        self.breaker.success()
        return result

    async def fetch(self, user_id: str, bundle_version: str) -> UserState:
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(_hist(user_id), -self._history_length, -1)
        pipe.get(_ver(user_id))
        pipe.get(_emb(bundle_version, user_id))
        raw_history, raw_version, raw_embedding = await self._call(pipe.execute, "history fetch")
        version = int(raw_version) if raw_version is not None else 0
        return UserState(
            history=tuple(item.decode() for item in raw_history),
            version=version,
            embedding=unpack_embedding(raw_embedding, version),
        )

    async def cache_embedding(
        self, user_id: str, bundle_version: str, version: int, embedding: bytes
    ) -> None:
        value = pack_embedding(version, embedding)
        await self._call(
            lambda: self._redis.set(_emb(bundle_version, user_id), value, ex=self._cache_ttl),
            "embedding cache write",
        )

    async def append_events(self, events: Sequence[tuple[str, str]]) -> None:
        by_user: dict[str, list[str]] = {}
        for user_id, item_id in events:
            by_user.setdefault(user_id, []).append(item_id)
        pipe = self._redis.pipeline(transaction=True)
        for user_id, items in by_user.items():
            pipe.rpush(_hist(user_id), *items)
            pipe.ltrim(_hist(user_id), -self._history_length, -1)
            pipe.expire(_hist(user_id), self._history_ttl)
            pipe.incrby(_ver(user_id), len(items))
            pipe.expire(_ver(user_id), self._history_ttl)
        await self._call(pipe.execute, "event append")

    async def health(self) -> StoreHealth:
        if self.breaker.state == "open":
            return "breaker_open"
        try:
            await self._call(self._redis.ping, "health check")
        except StoreUnavailableError:
            return "down"
        return "up"

    async def close(self) -> None:
        await self._redis.aclose()
