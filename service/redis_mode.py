"""The startup check that `DUET_REDIS_MODE` matches the server `DUET_REDIS_URL` names.

A module of its own, importing neither the store nor the metrics: `python -m service` runs it in
the supervisor, which must not create Prometheus multiprocess files of its own.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry as SyncRetry

from service.errors import DuetError
from service.settings import Settings

_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


class RedisModeError(DuetError):
    """`DUET_REDIS_MODE` does not match the server `DUET_REDIS_URL` names."""

    code = "redis_mode_mismatch"


def check_mode(settings: Settings, *, timeout_s: float = 1.0) -> None:
    """Refuse a mode that contradicts the server: one line naming DUET_REDIS_MODE.

    Synchronous, at startup; an unreachable server passes (the service starts degraded, not
    ready, and serves fallbacks until Redis answers).
    """
    if settings.redis_url is None or settings.redis_mode == "sentinel":
        return
    try:
        node = redis.Redis.from_url(
            settings.redis_url if settings.redis_mode == "single" else _node0(settings.redis_url),
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=SyncRetry(NoBackoff(), 0),
        )  # fmt: skip
        with node:
            info = node.info("cluster")
    except _FAILURES:
        return
    enabled = int(info.get("cluster_enabled", 0)) == 1
    if settings.redis_mode == "single" and enabled:
        raise RedisModeError(
            "DUET_REDIS_MODE=single, but DUET_REDIS_URL names a Redis Cluster node "
            "(cluster_enabled:1); set DUET_REDIS_MODE=cluster"
        )
    if settings.redis_mode == "cluster" and not enabled:
        raise RedisModeError(
            "DUET_REDIS_MODE=cluster, but DUET_REDIS_URL names a standalone Redis "
            "(cluster_enabled:0); set DUET_REDIS_MODE=single (or sentinel)"
        )


def _node0(url: str) -> str:
    """A cluster URL as a plain node URL (db 0)."""
    parts = urlsplit(url)
    return parts._replace(path="/0").geturl()
