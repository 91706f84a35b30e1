"""Redis store: redis.asyncio + hiredis, millisecond deadlines, no retries, a circuit breaker.

Keys (`keys.py`; one scheme on a single node, Sentinel and Cluster): per user, under the hash tag
`{u:<user>}`, the history list, its version, the seen set and one embedding per bundle version.
A recommend costs one round trip: one EVALSHA of a read-only script doing LRANGE, GET, GET,
ZRANGE (measured ~15% cheaper than a pipeline in redis-py); an event batch one script call (on a
cluster, one per user slot: a script may not span slots, and redis-py refuses EVALSHA inside
cluster pipelines). The embedding writes are a plain pipeline, which redis-py groups by node.
On a single node and Sentinel the fetch script also GETs `duet:cat:{<bundle>}:ver` (the
live-catalog version, written by catalog/changes.py), so a worker behind it catches up before
answering; on a cluster that key lives in another slot, and the recommender reads it itself.

An in-process layer (`local_cache_size` users, LRU) answers repeat requests with no round trip
at all; it stays coherent through the user ids the append script publishes (see
`invalidation.py`) and is bypassed whenever that channel is down.

Deadlines: one `asyncio.timeout` around each round trip (no per-socket-read timeouts on top,
they cost as much again); connections come from a bounded non-blocking pool, and an exhausted
pool is refused at once (503 / degraded answer) without counting against the breaker.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from service.errors import StoreUnavailableError
from service.settings import Settings
from service.store import keys
from service.store.base import (
    EmbeddingWrite,
    Store,
    StoreHealth,
    UserState,
    pack_embedding,
    unpack_embedding,
)
from service.store.breaker import CircuitBreaker
from service.store.clients import (
    Discovery,
    LuaScript,
    PubSubNodes,
    RedisClient,
    open_client,
    slot_groups,
)
from service.store.guard import FAILURES, guarded
from service.store.invalidation import InvalidationListener

# KEYS[5], the live-catalog version, is passed off-cluster only (another slot): "0" when no change
# was ever logged; false on a cluster, where the recommender reads it with a GET of its own.
_FETCH = """
return {redis.call('LRANGE', KEYS[1], ARGV[1], -1),
        redis.call('GET', KEYS[2]) or false,
        redis.call('GET', KEYS[3]) or false,
        redis.call('ZRANGE', KEYS[4], 0, -1),
        KEYS[5] and (redis.call('GET', KEYS[5]) or '0') or false}
"""

# KEYS: (history, version, seen) per user; ARGV: length, ttl, seen bound, invalidation channel,
# then per user "<origin>:<id>", n and its n positive item ids, m and its m negative ones. One
# script instead of MULTI + many commands per user: atomic all the same, and redis-py packs one
# command (its CPU, not Redis', is what an event costs). Publishes "<origin>:<id>" on the
# invalidation channel for each user. Returns how many seen items fell off the bound.
_APPEND = """
local length, ttl, bound, channel = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local a, dropped = 5, 0
for k = 1, #KEYS, 3 do
  local user = ARGV[a]
  a = a + 1
  local n = tonumber(ARGV[a])
  local m = tonumber(ARGV[a + n + 1])
  if n > 0 then
    redis.call('RPUSH', KEYS[k], unpack(ARGV, a + 1, a + n))
    redis.call('LTRIM', KEYS[k], -length, -1)
    redis.call('EXPIRE', KEYS[k], ttl)
  end
  local version = redis.call('INCRBY', KEYS[k + 1], n + m) - n - m
  redis.call('EXPIRE', KEYS[k + 1], ttl)
  for i = a + 1, a + n + m + 1 do
    if i ~= a + n + 1 then
      version = version + 1
      redis.call('ZADD', KEYS[k + 2], version, ARGV[i])
    end
  end
  dropped = dropped + redis.call('ZREMRANGEBYRANK', KEYS[k + 2], 0, -bound - 1)
  redis.call('EXPIRE', KEYS[k + 2], ttl)
  redis.call('PUBLISH', channel, user)
  a = a + n + m + 2
end
return dropped
"""


@dataclass(slots=True)
class _Local:
    history: tuple[str, ...]
    version: int
    embeddings: dict[str, bytes]
    expires: float
    seen: tuple[str, ...] = ()


class RedisStore(Store):
    backend = "redis"

    def __init__(self, settings: Settings, *, breaker: CircuitBreaker) -> None:
        """Everything from `settings`: the mode, the deadline, the pool, the bounds."""
        self._seen_max = settings.seen_max_items
        self._timeout = settings.redis_timeout_ms / 1000
        self._redis: RedisClient = open_client(
            settings, connect_timeout=self._timeout, max_connections=settings.redis_max_connections
        )
        self._discovery = Discovery(self._redis)
        self._history_length = settings.history_length
        self._history_ttl = settings.history_ttl_seconds
        self._cache_ttl = settings.cache_ttl_seconds
        self.breaker = breaker
        self.reached = False
        """True once Redis answered since start (readiness waits for it)."""
        self._fetch = LuaScript(_FETCH)
        self._append = LuaScript(_APPEND)
        self._local: OrderedDict[str, _Local] = OrderedDict()
        self._local_size = settings.local_cache_size
        self._listener = (
            InvalidationListener(
                PubSubNodes(settings, timeout_s=max(self._timeout, 0.5)),
                on_invalidate=self._forget,
                timeout_s=max(self._timeout, 0.5),
            )
            if self._local_size > 0
            else None
        )

    @property
    def _origin(self) -> str:
        return self._listener.origin if self._listener is not None else "-"

    def _forget(self, user_id: str | None) -> None:
        if user_id is None:
            self._local.clear()
        else:
            self._local.pop(user_id, None)

    def _local_state(self, user_id: str, bundle_version: str) -> UserState | None:
        entry = self._local.get(user_id)
        if entry is None or entry.expires < time.monotonic():
            return None
        embedding = entry.embeddings.get(bundle_version)
        if embedding is None:
            return None
        self._local.move_to_end(user_id)
        return UserState(entry.history, entry.version, embedding, layer="local", seen=entry.seen)

    def _remember(self, user_id: str, bundle_version: str, state: UserState) -> None:
        entry = self._local.get(user_id)
        now = time.monotonic()
        if entry is None or entry.version != state.version or entry.expires < now:
            expires = now + self._cache_ttl
            entry = _Local(state.history, state.version, {}, expires, state.seen)
            self._local[user_id] = entry
            while len(self._local) > self._local_size:
                self._local.popitem(last=False)
        if state.embedding is not None:
            entry.embeddings[bundle_version] = state.embedding

    async def _call(self, operation: Callable[[], Any], what: str) -> Any:
        result = await guarded(
            self.breaker, self._timeout, operation, what, ready=self._discovery.ready
        )
        self.reached = True
        return result

    async def _read_user(self, user_id: str, bundle_version: str, change_log: str) -> Any:
        user_keys: tuple[str, ...] = (
            keys.hist(user_id), keys.ver(user_id), keys.emb(bundle_version, user_id),
            keys.seen(user_id),
        )  # fmt: skip
        if not isinstance(self._redis, RedisCluster):  # same slot only on one node
            user_keys += (keys.catalog_version(change_log),)
        return await self._fetch(self._redis, user_keys, [-self._history_length])

    async def fetch(
        self, user_id: str, bundle_version: str, *, change_log: str | None = None
    ) -> UserState:
        listener = self._listener
        seq = 0
        if listener is not None:
            listener.start()
            if listener.healthy:
                local = self._local_state(user_id, bundle_version)
                if local is not None:
                    return local
            seq = listener.seq
        raw_history, raw_version, raw_embedding, raw_seen, raw_catalog = await self._call(
            lambda: self._read_user(user_id, bundle_version, change_log or bundle_version),
            "history fetch",
        )
        version = int(raw_version) if raw_version is not None else 0
        state = UserState(
            history=tuple(item.decode() for item in raw_history),
            version=version,
            embedding=unpack_embedding(raw_embedding, version),
            seen=tuple(item.decode() for item in raw_seen),
            catalog_version=int(raw_catalog) if raw_catalog is not None else None,
        )
        if listener is not None and listener.unchanged_since(user_id, seq):
            self._remember(user_id, bundle_version, state)
        return state

    async def cache_embeddings(self, writes: Sequence[EmbeddingWrite]) -> None:
        async def write_all() -> Any:
            async with self._redis.pipeline(transaction=False) as pipe:
                for w in writes:
                    key = keys.emb(w.bundle_version, w.user_id)
                    pipe.set(key, pack_embedding(w.version, w.embedding), ex=self._cache_ttl)
                return await pipe.execute()

        await self._call(write_all, "embedding cache write")
        for w in writes:
            entry = self._local.get(w.user_id)
            if entry is not None and entry.version == w.version:
                entry.embeddings[w.bundle_version] = w.embedding

    async def append_events(
        self, events: Sequence[tuple[str, str]], *, negatives: Sequence[tuple[str, str]] = ()
    ) -> int:
        by_user: dict[str, tuple[list[str], list[str]]] = {}
        for index, pairs in enumerate((events, negatives)):
            for user_id, item_id in pairs:
                by_user.setdefault(user_id, ([], []))[index].append(item_id)
        groups = slot_groups(self._redis, list(by_user.items()), lambda entry: keys.hist(entry[0]))

        def call(group: list[tuple[str, tuple[list[str], list[str]]]]) -> tuple[Any, Any]:
            script_keys: list[str] = []
            args: list[str | int] = [
                self._history_length, self._history_ttl, self._seen_max, keys.INVALIDATE_CHANNEL,
            ]  # fmt: skip
            for user_id, (positive, negative) in group:
                script_keys += [keys.hist(user_id), keys.ver(user_id), keys.seen(user_id)]
                args += [f"{self._origin}:{user_id}", len(positive), *positive]
                args += [len(negative), *negative]
            return script_keys, args

        async def append() -> int:
            # one call per user slot on a cluster (in one pipeline; atomic per user there), one
            # call otherwise
            return sum(
                int(r) for r in await self._append.many(self._redis, [call(g) for g in groups])
            )

        dropped = await self._call(append, "event append")
        for user_id in by_user:  # this worker at once; the others on the published invalidation
            if self._listener is not None:
                self._listener.forget(user_id)
            else:
                self._forget(user_id)
        return int(dropped)

    async def connect(self) -> bool:
        """First contact, bounded by seconds rather than the request deadline: discover the
        cluster, load the scripts (every master), so the first requests pay for neither. True
        if Redis answered. Not needed to serve (the first calls do the same, degraded)."""
        if not await self._discovery.wait():
            return False
        try:
            async with asyncio.timeout(max(self._timeout, 2.0)):
                for script in (self._fetch, self._append):
                    await self._redis.script_load(script.source)
        except FAILURES:
            return False
        self.reached = True
        return True

    async def _ping(self) -> Any:
        if isinstance(self._redis, RedisCluster):  # every master: any of them down is "down"
            return await self._redis.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
        return await self._redis.ping()

    async def health(self) -> StoreHealth:
        """A PING through the breaker: while it is open, refused (and a probe once cooled)."""
        try:
            await self._call(self._ping, "health check")
        except StoreUnavailableError:
            return "breaker_open" if self.breaker.state == "open" else "down"
        return "up"

    async def close(self) -> None:
        await self._discovery.close()
        if self._listener is not None:
            await self._listener.close()
        await self._redis.aclose()
