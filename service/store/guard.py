"""One Redis round trip under the circuit breaker and a hard deadline; failures become 503s.

Shared by the store (histories, embeddings) and the exposure log, which use the same Redis
and so the same breaker: when Redis is down, neither waits for a timeout per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import MaxConnectionsError, RedisClusterException, RedisError

from service.errors import StoreUnavailableError
from service.store.breaker import CircuitBreaker

T = TypeVar("T")
# RedisClusterException is no RedisError: "cannot be connected", "slot not covered" (a cluster
# whose nodes are unreachable, or a master failing over)
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


async def guarded(
    breaker: CircuitBreaker,
    deadline: float,
    operation: Callable[[], Awaitable[T]],
    what: str,
    *,
    ready: Callable[[], bool] | None = None,
) -> T:
    """`operation()` within `deadline` seconds, refused at once while the breaker is open.

    An exhausted connection pool is refused too, but not counted against the breaker: it says
    this worker is busy, not that Redis is unwell. So is a call while `ready()` says the client
    is still discovering its cluster (in the background, see clients.Discovery).
    """
    if not breaker.allow():
        raise StoreUnavailableError(f"Redis circuit breaker open; {what} refused")
    if ready is not None and not ready():
        breaker.release()
        raise StoreUnavailableError(f"Redis Cluster topology being discovered; {what} refused")
    try:
        async with asyncio.timeout(deadline):
            result = await operation()
    except MaxConnectionsError as exc:
        raise StoreUnavailableError(f"Redis connection pool exhausted during {what}") from exc
    except FAILURES as exc:
        breaker.failure()
        raise StoreUnavailableError(
            f"Redis unavailable during {what}: {type(exc).__name__}"
        ) from exc
    breaker.success()
    return result
