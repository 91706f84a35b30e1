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
    """Redis (single, cluster or sentinel: `DUET_REDIS_MODE`) when configured, else in-process."""
    if not settings.uses_redis:
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
    return RedisStore(settings, breaker=breaker)
