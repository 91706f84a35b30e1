"""Redis clients for the three deployments `DUET_REDIS_MODE` names: single, cluster, sentinel.

    single     DUET_REDIS_URL is the node                        redis.asyncio.Redis
    cluster    DUET_REDIS_URL is one startup node; the rest are  redis.asyncio.cluster.RedisCluster
               discovered (CLUSTER SLOTS), MOVED/ASK followed
    sentinel   DUET_REDIS_SENTINELS (host:port,...) find the     redis.asyncio.sentinel master_for
               master DUET_REDIS_MASTER_NAME, followed across
               failovers; DUET_REDIS_URL (optional) only lends
               its password and db

Every key carries a hash tag (see `keys.py`), so each script stays in one slot, and a batch is
one script call per slot in cluster mode (`slot_groups`), one call in the others: redis-py
refuses EVALSHA inside cluster pipelines, and a node refuses a script whose keys span slots.

No client retries (the breaker and the callers' fallbacks decide), no per-read socket deadline
(callers bound each round trip with `asyncio.timeout`), a bounded pool. Pub/sub (reload
fan-out, local-cache invalidations) uses `PubSubNodes`: a plain connection to one node, the
next known node when it fails; classic PUBLISH reaches every node of a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import NoScriptError
from redis.utils import HIREDIS_AVAILABLE

from service.redis_mode import RedisModeError, check_mode
from service.settings import Settings
from service.store.guard import FAILURES

RedisClient = aioredis.Redis | RedisCluster
T = TypeVar("T")
C = TypeVar("C", bound=type[AbstractConnection])
_PACKER = HiredisRespSerializer() if HIREDIS_AVAILABLE else None


def hiredis_packing(base: C) -> C:
    """`base` packing commands with hiredis's C packer, as redis-py's sync connections do.

    Its asyncio connections pack in Python, ~0.9 us per argument here, and every recommend's
    exposure batch is one command of ~50 arguments: 8.3 us for a 9-argument EVALSHA against
    1.0 us with hiredis (same bytes). Cluster clients keep redis-py's packer: RedisCluster takes
    no connection class."""
    if _PACKER is None:
        return base
    pack = _PACKER.pack

    class Packed(base):  # type: ignore[valid-type,misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            packed: list[bytes] = pack(*args)
            return packed

    Packed.__name__ = Packed.__qualname__ = f"Hiredis{base.__name__}"
    return Packed  # type: ignore[return-value]


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    out = []
    for part in (settings.redis_sentinels or "").split(","):
        host, _, port = part.strip().rpartition(":")
        out.append((host, int(port)))
    return out


def _url_auth(settings: Settings) -> dict[str, Any]:
    """Password, username and db from DUET_REDIS_URL (sentinel mode: the rest is ignored)."""
    if settings.redis_url is None:
        return {}
    parts = urlsplit(settings.redis_url)
    auth: dict[str, Any] = {"username": parts.username or None, "password": parts.password}
    path = parts.path.strip("/")
    if path.isdigit():
        auth["db"] = int(path)
    return auth


def _sentinel(settings: Settings, timeout: float) -> Sentinel:
    return Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        **_url_auth(settings),
    )


def open_client(
    settings: Settings, *, connect_timeout: float, max_connections: int,
    socket_timeout: float | None = None,
) -> RedisClient:  # fmt: skip
    """The mode's client; `socket_timeout=None`: the caller's asyncio.timeout bounds each call."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": _no_retry(),
        "health_check_interval": 0,
    }
    if settings.redis_mode == "cluster":
        assert settings.redis_url is not None  # noqa: S101 (the settings validator checked it)
        return RedisCluster.from_url(
            settings.redis_url,
            max_connections=max_connections,
            require_full_coverage=False,  # a failed master's slots fail, the others serve
            **common,
        )
    if settings.redis_mode == "sentinel":
        assert settings.redis_master_name is not None  # noqa: S101
        master: aioredis.Redis = _sentinel(settings, connect_timeout).master_for(
            settings.redis_master_name,
            max_connections=max_connections,
            connection_class=hiredis_packing(SentinelManagedConnection),
            **common,
        )
        return master
    assert settings.redis_url is not None  # noqa: S101
    pool = aioredis.ConnectionPool.from_url(
        settings.redis_url, max_connections=max_connections, **common
    )
    pool.connection_class = hiredis_packing(pool.connection_class)  # TCP, TLS or unix socket
    return aioredis.Redis(connection_pool=pool)


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def slot_groups(client: RedisClient, items: Sequence[T], key: Callable[[T], str]) -> list[list[T]]:
    """`items` in one group (single node, sentinel), or one group per hash slot (cluster)."""
    if not isinstance(client, RedisCluster):
        return [list(items)] if items else []
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(client.keyslot(key(item)), []).append(item)
    return list(groups.values())


class Discovery:
    """Keeps a cluster client's topology discovery off the request path.

    redis-py (re)discovers a cluster (CLUSTER SLOTS, then COMMAND: a large reply) on its first
    call and after any connection error, inside whatever call comes next; on a busy machine that
    outlasts a 50 ms deadline, so the call fails, and the next one starts over. Here the
    discovery runs in a background task with a deadline of its own, and calls meanwhile are
    refused at once (the caller falls back or answers 503). Single node and Sentinel: no-op.
    """

    def __init__(self, client: RedisClient, *, timeout_s: float = 5.0, retry_s: float = 0.25):
        self._client = client if isinstance(client, RedisCluster) else None
        self._timeout = timeout_s
        self._retry = retry_s
        self._task: asyncio.Task[None] | None = None
        self._failed_at = -retry_s

    def ready(self) -> bool:
        client = self._client
        if client is None or not client._initialize:  # redis-py's own "must rediscover" flag
            return True
        loop = asyncio.get_running_loop()
        if self._task is None and loop.time() - self._failed_at >= self._retry:
            self._task = loop.create_task(self._discover(client))
        return False

    async def wait(self) -> bool:
        """Discover now if needed (bounded); True once the client knows its cluster."""
        if self.ready():
            return True
        task = self._task
        if task is not None:
            await asyncio.wait({task}, timeout=self._timeout)
        return self.ready()

    async def _discover(self, client: RedisCluster) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await client.initialize()
        except FAILURES:
            self._failed_at = asyncio.get_running_loop().time()
        finally:
            self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=self._timeout)


class LuaScript:
    """EVALSHA, and EVAL once when the node lost its script cache (restart, failover, flush)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def many(
        self, client: RedisClient, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
    ) -> list[Any]:
        """One call per (keys, args), each its own slot: on a cluster one pipeline of raw
        EVALSHAs (redis-py groups it by node, one round trip each, and follows MOVED/ASK; it
        refuses only Script objects in cluster pipelines). A NoScriptError means that call did
        not run, so exactly those are sent again as EVAL."""
        if len(calls) <= 1:
            return [await self(client, *call) for call in calls]
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
            results = list(await pipe.execute(raise_on_error=False))
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            async with client.pipeline(transaction=False) as pipe:
                for i in missing:
                    keys, args = calls[i]
                    pipe.execute_command("EVAL", self.source, len(keys), *keys, *args)
                for i, result in zip(
                    missing, await pipe.execute(raise_on_error=False), strict=True
                ):
                    results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def __call__(self, client: RedisClient, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.execute_command("EVAL", self.source, len(keys), *keys, *args)


class PubSubNodes:
    """Plain connections to one node for pub/sub, moving on to another node when one fails.

    single: the URL's node; sentinel: the current master; cluster: the startup node, then every
    node it lists (CLUSTER NODES is re-read on each connection), tried in turn.
    """

    def __init__(self, settings: Settings, *, timeout_s: float) -> None:
        self._settings = settings
        self._timeout = timeout_s
        self._known: list[tuple[str, int]] = []
        if settings.redis_url is not None and settings.redis_mode == "cluster":
            parts = urlsplit(settings.redis_url)
            self._known = [(parts.hostname or "127.0.0.1", parts.port or 6379)]

    def _node(self, host: str, port: int, **kwargs: Any) -> aioredis.Redis:
        auth = _url_auth(self._settings)
        auth.pop("db", None)
        return aioredis.Redis(
            host=host, port=port, socket_connect_timeout=self._timeout, retry=_no_retry(),
            **auth, **kwargs,
        )  # fmt: skip

    async def connect(self, **kwargs: Any) -> aioredis.Redis:
        """A client whose node answered a PING just now; raises a RedisError if none does."""
        settings = self._settings
        if settings.redis_mode == "single":
            assert settings.redis_url is not None  # noqa: S101
            client = aioredis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=self._timeout, retry=_no_retry(),
                **kwargs,
            )  # fmt: skip
            return await self._alive(client)
        if settings.redis_mode == "sentinel":
            assert settings.redis_master_name is not None  # noqa: S101
            client = _sentinel(settings, self._timeout).master_for(
                settings.redis_master_name, retry=_no_retry(), **kwargs
            )
            return await self._alive(client)
        candidates = list(self._known)
        random.shuffle(candidates[1:])
        last: BaseException = redis.ConnectionError("no cluster node known")
        for host, port in candidates:
            client = self._node(host, port, **kwargs)
            try:
                await self._alive(client)
                async with asyncio.timeout(self._timeout):
                    self._learn(await client.execute_command("CLUSTER", "NODES"))  # type: ignore[no-untyped-call]
                return client
            except FAILURES as error:
                last = error
                with contextlib.suppress(*FAILURES):
                    await client.aclose()
        raise last

    def _learn(self, nodes: Any) -> None:
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        if isinstance(nodes, dict):
            text = "\n".join(f"x {addr} {info.get('flags', '')}" for addr, info in nodes.items())
        found = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 3 or "fail" in fields[2].split(","):
                continue
            address = fields[1].split("@", 1)[0]
            host, _, port = address.rpartition(":")
            if port.isdigit():
                found.append((host or "127.0.0.1", int(port)))
        if found:
            first = self._known[:1]
            self._known = first + [node for node in found if node not in first]

    async def _alive(self, client: aioredis.Redis) -> aioredis.Redis:
        try:
            async with asyncio.timeout(self._timeout):
                await client.ping()
        except BaseException:
            with contextlib.suppress(*FAILURES):
                await client.aclose()
            raise
        return client


__all__ = [
    "FAILURES",
    "Discovery",
    "LuaScript",
    "PubSubNodes",
    "RedisClient",
    "RedisModeError",
    "check_mode",
    "is_cluster",
    "open_client",
    "slot_groups",
]
