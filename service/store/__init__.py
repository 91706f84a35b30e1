"""History and embedding-cache storage behind one interface; `open_store` picks the backend."""

from __future__ import annotations

from service import metrics
from service.settings import Settings
from service.store.base import EMPTY_STATE, Store, StoreHealth, UserState
from service.store.breaker import BreakerState, CircuitBreaker
from service.store.memory import MemoryStore
from service.store.redis import RedisStore

__all__ = [
    "EMPTY_STATE",
    "CircuitBreaker",
    "MemoryStore",
    "RedisStore",
    "Store",
    "StoreHealth",
    "UserState",
    "open_store",
]


def _report_breaker(state: BreakerState) -> None:
    metrics.REDIS_BREAKER_OPEN.set(1 if state == "open" else 0)


def open_store(settings: Settings) -> Store:
    """Redis when `DUET_REDIS_URL` is set, else the embedded in-process store."""
    if settings.redis_url is None:
        return MemoryStore(
            history_length=settings.history_length,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            max_embeddings=settings.local_cache_size,
            seen_max_items=settings.seen_max_items,
        )
    breaker = CircuitBreaker(
        failures=settings.breaker_failures,
        cooldown_seconds=settings.breaker_cooldown_seconds,
        on_change=_report_breaker,
    )
    return RedisStore(
        settings.redis_url,
        timeout_ms=settings.redis_timeout_ms,
        max_connections=settings.redis_max_connections,
        history_length=settings.history_length,
        history_ttl_seconds=settings.history_ttl_seconds,
        cache_ttl_seconds=settings.cache_ttl_seconds,
        breaker=breaker,
        local_cache_size=settings.local_cache_size,
        seen_max_items=settings.seen_max_items,
    )
