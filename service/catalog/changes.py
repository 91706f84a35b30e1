"""The catalog change log: Redis is the source of truth, keyed by bundle version.

Keys (per bundle version, so a new bundle starts from its own log):
    duet:cat:{<bundle>}:item:<id>   hash: the item's JSON, or absent once deleted
    duet:cat:{<bundle>}:log         stream of changes (op, item_id, body)
    duet:cat:{<bundle>}:ver         change counter, INCR'd in the same script as XADD
One Lua script writes the hashes, the stream entries and the counter together: a Redis failure
leaves nothing half-applied, and a worker that reads a counter newer than what it applied reads
the stream up to it before answering. The in-process log does the same within one process.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.errors import StoreUnavailableError
from service.store.keys import catalog_version as catalog_version_key

Op = Literal["upsert", "delete", "available"]


@dataclass(frozen=True, slots=True)
class Change:
    op: Op
    item_id: str
    body: dict[str, Any]
    """upsert: the item object; available: {"available": bool}; delete: {}."""
    position: str = "0-0"
    """Stream id once logged; "0-0" before."""


class ChangeLog(ABC):
    @abstractmethod
    async def append(self, bundle: str, changes: Sequence[Change]) -> int:
        """Log `changes` atomically; returns the new catalog version (change count)."""

    @abstractmethod
    async def read(
        self, bundle: str, after: str, *, count: int = 1_000, block_ms: int | None = None
    ) -> list[Change]:
        """Changes logged after stream position `after`, oldest first; may block `block_ms`."""

    @abstractmethod
    async def version(self, bundle: str) -> int: ...

    @abstractmethod
    async def item(self, bundle: str, item_id: str) -> dict[str, Any] | None:
        """The item as logged (None if never upserted or deleted)."""

    @abstractmethod
    async def head(self, bundle: str) -> tuple[str, int]:
        """(last position, change count), read together: what a compaction folds in."""

    @abstractmethod
    async def logs(self) -> list[str]:
        """The names (bundle versions) of every change log held, sorted."""

    async def close(self) -> None:
        return None


class MemoryChangeLog(ChangeLog):
    def __init__(self) -> None:
        self._log: dict[str, list[Change]] = {}
        self._items: dict[str, dict[str, dict[str, Any]]] = {}
        self._grew = asyncio.Condition()

    async def append(self, bundle: str, changes: Sequence[Change]) -> int:
        log = self._log.setdefault(bundle, [])
        items = self._items.setdefault(bundle, {})
        for change in changes:
            logged = Change(change.op, change.item_id, change.body, f"{len(log) + 1}-0")
            log.append(logged)
            if change.op == "upsert":
                items[change.item_id] = dict(change.body)
            elif change.op == "delete":
                items.pop(change.item_id, None)
        async with self._grew:
            self._grew.notify_all()
        return len(log)

    async def read(
        self, bundle: str, after: str, *, count: int = 1_000, block_ms: int | None = None
    ) -> list[Change]:
        start = int(after.split("-", maxsplit=1)[0])
        if block_ms is not None and len(self._log.get(bundle, ())) <= start:
            async with self._grew:
                try:
                    await asyncio.wait_for(self._grew.wait(), block_ms / 1000)
                except TimeoutError:
                    return []
        return self._log.get(bundle, [])[start : start + count]

    async def version(self, bundle: str) -> int:
        return len(self._log.get(bundle, ()))

    async def item(self, bundle: str, item_id: str) -> dict[str, Any] | None:
        return self._items.get(bundle, {}).get(item_id)

    async def head(self, bundle: str) -> tuple[str, int]:
        log = self._log.get(bundle, [])
        return (log[-1].position if log else "0-0"), len(log)

    async def logs(self) -> list[str]:
        return sorted(name for name, log in self._log.items() if log)


# KEYS[1] log, KEYS[2] counter, then one item hash key per change; ARGV: op, id, body triples.
_APPEND = """
for i = 1, #ARGV, 3 do
  local key = KEYS[2 + (i + 2) / 3]
  if ARGV[i] == 'upsert' then redis.call('HSET', key, 'json', ARGV[i + 2])
  elseif ARGV[i] == 'delete' then redis.call('DEL', key) end
  redis.call('XADD', KEYS[1], '*', 'op', ARGV[i], 'id', ARGV[i + 1], 'body', ARGV[i + 2])
end
return redis.call('INCRBY', KEYS[2], #ARGV / 3)
"""


class RedisChangeLog(ChangeLog):
    """Every call bounded by `timeout_s`; a Redis failure raises StoreUnavailableError."""

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_connect_timeout=timeout_s)
        self._timeout = timeout_s
        self._script = self._redis.register_script(_APPEND)

    @staticmethod
    def _key(bundle: str, what: str) -> str:
        if what == "ver":  # the store reads it in its fetch round trip: one spelling
            return catalog_version_key(bundle)
        return f"duet:cat:{{{bundle}}}:{what}"  # hash tag: one slot per bundle

    async def _call(self, awaitable: Any, extra_s: float = 0.0) -> Any:
        try:
            async with asyncio.timeout(self._timeout + extra_s):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailableError(f"catalog log: {type(exc).__name__}") from exc

    async def append(self, bundle: str, changes: Sequence[Change]) -> int:
        keys = [self._key(bundle, "log"), self._key(bundle, "ver")]
        args: list[str] = []
        for c in changes:
            keys.append(self._key(bundle, f"item:{c.item_id}"))
            args += [c.op, c.item_id, json.dumps(c.body, separators=(",", ":"))]
        return int(await self._call(self._script(keys=keys, args=args)))

    async def read(
        self, bundle: str, after: str, *, count: int = 1_000, block_ms: int | None = None
    ) -> list[Change]:
        reply = await self._call(
            self._redis.xread({self._key(bundle, "log"): after}, count=count, block=block_ms),
            extra_s=(block_ms or 0) / 1000,
        )
        out: list[Change] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(
                    Change(
                        fields[b"op"].decode(),
                        fields[b"id"].decode(),
                        json.loads(fields[b"body"]),
                        entry_id.decode(),
                    )
                )
        return out

    async def version(self, bundle: str) -> int:
        value = await self._call(self._redis.get(self._key(bundle, "ver")))
        return int(value or 0)

    async def item(self, bundle: str, item_id: str) -> dict[str, Any] | None:
        value = await self._call(self._redis.hget(self._key(bundle, f"item:{item_id}"), "json"))
        return None if value is None else dict(json.loads(value))

    async def head(self, bundle: str) -> tuple[str, int]:
        async def both() -> Any:
            async with self._redis.pipeline(transaction=True) as pipe:  # MULTI: one moment
                pipe.xrevrange(self._key(bundle, "log"), count=1)
                pipe.get(self._key(bundle, "ver"))
                return await pipe.execute()

        last, count = await self._call(both())
        return (last[0][0].decode() if last else "0-0"), int(count or 0)

    async def logs(self) -> list[str]:
        """SCAN (each call bounded) for `duet:cat:{<bundle>}:log` streams: tools, not requests."""
        names: set[str] = set()
        cursor = 0
        while True:
            cursor, found = await self._call(
                self._redis.scan(cursor, match="duet:cat:{*}:log", count=1_000, _type="STREAM")
            )
            names.update(key.decode()[len("duet:cat:{") : -len("}:log")] for key in found)
            if not cursor:
                return sorted(names)

    async def close(self) -> None:
        await self._redis.aclose()
