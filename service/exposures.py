"""Exposure records, click attribution and per-arm counters for the experiment report.

Every recommend response is an exposure: a record goes to a bounded Redis Stream (for offline
analysis) and a short-lived request record remembers which arm showed which items to whom. A
click is attributed through its `request_id`, else through the user's last exposure within the
attribution window, and counts only if the clicked item was in that exposure. The counters live
in Redis, updated atomically by a Lua script, so the report is right across workers; a second,
in-process implementation serves the embedded mode and passes the same tests.

Redis keys (`{p}` is the prefix, "duet:" by default; `{s}` the user's shard, crc32(user) mod
`DUET_EXPERIMENT_SHARDS`, see `store/keys.py`):
    {p}{x{s}}:exposures                stream of exposure records, XADD MAXLEN ~ bounded
    {p}{x{s}}:req:{request_id}         hash: experiment, arm, user, i:{item}=position,
                                       c:{item}=1 once clicked, clicked=1; TTL = window
    {p}{x{s}}:last:{user}              request_id of the user's last exposure; TTL = window
    {p}{x{s}}:xp:{experiment}:counts   hash: {arm}:exposures, {arm}:clicks, {arm}:clicked_exposures
    {p}{x{s}}:xp:{experiment}:users:{arm}  set of assigned users (exact: a HyperLogLog's 0.8%
                                       error would trip the sample-ratio check at scale)
Everything about one user is in one shard, so recording and attributing stay one script per
shard (one slot; on a single node, one script for the whole batch), and one experiment's writes
spread over every shard, hence every node of a cluster. The report sums the shards (a user is
in exactly one, so the user sets add up exactly). The attribution script reads a key named by
a value (the last request id), which a cluster allows because it is in the same slot.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from redis.typing import EncodableT

from service.settings import Settings
from service.stats import ArmCounts
from service.store import keys
from service.store.breaker import CircuitBreaker
from service.store.clients import Discovery, LuaScript, RedisClient, open_client, slot_groups
from service.store.guard import guarded

DEFAULT_WINDOW_SECONDS = 1_800.0
DEFAULT_STREAM_MAXLEN = 100_000
TRACKING_TIMEOUT_FLOOR_MS = 250
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Exposure:
    """One recommend response; `items[i]` was shown at position `i + 1`."""

    request_id: str
    user_id: str
    experiment: str
    arm: str
    bundle_version: str
    items: tuple[str, ...]
    timestamp: float

    def record(self) -> dict[str, Any]:
        """The exposure record as written to the stream (and returned by `recent`)."""
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "experiment": self.experiment,
            "arm": self.arm,
            "bundle_version": self.bundle_version,
            "items": [
                {"item_id": item, "position": position}
                for position, item in enumerate(self.items, start=1)
            ],
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True, slots=True)
class Click:
    """A positive event to attribute; `request_id` when the client echoed it back."""

    user_id: str
    item_id: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    experiment: str
    arm: str
    request_id: str
    position: int
    counted: bool
    """False when this item of this exposure was already clicked (not counted twice)."""


class ExposureLog(ABC):
    @abstractmethod
    async def record(self, exposures: Sequence[Exposure]) -> None:
        """Log exposures, count them and their users by arm, open their attribution windows."""

    @abstractmethod
    async def attribute(self, clicks: Sequence[Click]) -> list[Attribution | None]:
        """Attribute each click to an exposure (None when none matches) and count it."""

    @abstractmethod
    async def counts(self, experiment: str, arms: Iterable[str]) -> dict[str, ArmCounts]: ...

    @abstractmethod
    async def recent(self, count: int) -> list[dict[str, Any]]:
        """The last `count` exposure records, newest first."""

    async def connect(self) -> bool:
        """Ready to write (a cluster client has discovered its nodes); bounded."""
        return True

    async def close(self) -> None:
        return None


@dataclass
class _Request:
    experiment: str
    arm: str
    user_id: str
    expires: float
    positions: dict[str, int]
    clicked_items: set[str] = field(default_factory=set)


class MemoryExposureLog(ExposureLog):
    """Embedded mode: one process, bounded dictionaries, the same semantics as Redis."""

    def __init__(
        self,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        max_requests: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_seconds
        self._max_requests = max_requests
        self._clock = clock
        self._stream: deque[dict[str, Any]] = deque(maxlen=stream_maxlen)
        self._requests: OrderedDict[str, _Request] = OrderedDict()
        self._last: OrderedDict[str, str] = OrderedDict()
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._users: dict[tuple[str, str], set[str]] = {}

    def _tally(self, experiment: str, arm: str) -> list[int]:
        return self._counts.setdefault((experiment, arm), [0, 0, 0])

    async def record(self, exposures: Sequence[Exposure]) -> None:
        for exposure in exposures:
            self._record(exposure)

    def _record(self, exposure: Exposure) -> None:
        self._stream.append(exposure.record())
        key = (exposure.experiment, exposure.arm)
        self._tally(*key)[0] += 1
        self._users.setdefault(key, set()).add(exposure.user_id)
        positions: dict[str, int] = {}
        for position, item in enumerate(exposure.items, start=1):
            positions.setdefault(item, position)
        self._requests[exposure.request_id] = _Request(
            experiment=exposure.experiment,
            arm=exposure.arm,
            user_id=exposure.user_id,
            expires=self._clock() + self._window,
            positions=positions,
        )
        self._requests.move_to_end(exposure.request_id)
        self._last[exposure.user_id] = exposure.request_id
        self._last.move_to_end(exposure.user_id)
        while len(self._requests) > self._max_requests:
            self._requests.popitem(last=False)
        while len(self._last) > self._max_requests:
            self._last.popitem(last=False)

    def _attribute_one(self, click: Click) -> Attribution | None:
        request_id = click.request_id or self._last.get(click.user_id)
        if request_id is None:
            return None
        request = self._requests.get(request_id)
        if request is None:
            return None
        if request.expires <= self._clock():
            del self._requests[request_id]
            return None
        position = request.positions.get(click.item_id)
        if request.user_id != click.user_id or position is None:
            return None
        counted = click.item_id not in request.clicked_items
        if counted:
            tally = self._tally(request.experiment, request.arm)
            tally[1] += 1
            if not request.clicked_items:
                tally[2] += 1
            request.clicked_items.add(click.item_id)
        return Attribution(request.experiment, request.arm, request_id, position, counted)

    async def attribute(self, clicks: Sequence[Click]) -> list[Attribution | None]:
        return [self._attribute_one(click) for click in clicks]

    async def counts(self, experiment: str, arms: Iterable[str]) -> dict[str, ArmCounts]:
        result = {}
        for arm in arms:
            exposures, clicks, clicked = self._counts.get((experiment, arm), [0, 0, 0])
            users = len(self._users.get((experiment, arm), ()))
            result[arm] = ArmCounts(users, exposures, clicks, clicked)
        return result

    async def recent(self, count: int) -> list[dict[str, Any]]:
        return [self._stream[-index] for index in range(1, min(count, len(self._stream)) + 1)]


# KEYS: the last-exposure key of each click's user. ARGV per click: its shard's key prefix, user,
# item, request_id or "". Returns one entry per click: {experiment, arm, request_id, position,
# counted} or false.
_ATTRIBUTE_LUA = """
local results = {}
local k = 1
for n = 1, #ARGV, 4 do
  local tag, user, item, request_id = ARGV[n], ARGV[n + 1], ARGV[n + 2], ARGV[n + 3]
  local result = false
  if request_id == '' then
    request_id = redis.call('GET', KEYS[k])
  end
  if request_id then
    local key = tag .. 'req:' .. request_id
    local f = redis.call('HMGET', key, 'experiment', 'arm', 'user', 'i:' .. item)
    if f[1] and f[3] == user and f[4] then
      local counted = redis.call('HSETNX', key, 'c:' .. item, 1)
      if counted == 1 then
        local counts = tag .. 'xp:' .. f[1] .. ':counts'
        redis.call('HINCRBY', counts, f[2] .. ':clicks', 1)
        if redis.call('HSETNX', key, 'clicked', 1) == 1 then
          redis.call('HINCRBY', counts, f[2] .. ':clicked_exposures', 1)
        end
      end
      result = {f[1], f[2], request_id, f[4], counted}
    end
  end
  results[#results + 1] = result
  k = k + 1
end
return results
"""


# KEYS per exposure: stream, request record, last exposure, counters, users of the arm (all in
# the user's shard). ARGV: stream maxlen (per shard), window (ms), then per exposure: request_id,
# user, experiment, arm, record (JSON), n, then its n item ids. One script call per batch (per
# shard on a cluster): redis-py spends ~20 us of CPU packing each command, so six commands per
# exposure cost more than Redis.
_RECORD_LUA = """
local maxlen, window = ARGV[1], ARGV[2]
local i, k = 3, 1
while i <= #ARGV do
  local request_id, user, experiment, arm = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local record, n = ARGV[i + 4], tonumber(ARGV[i + 5])
  redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 'record', record)
  local fields = {'experiment', experiment, 'arm', arm, 'user', user}
  for position = n, 1, -1 do  -- last write wins: an item shown twice keeps its first position
    fields[#fields + 1] = 'i:' .. ARGV[i + 5 + position]
    fields[#fields + 1] = position
  end
  redis.call('HSET', KEYS[k + 1], unpack(fields))
  redis.call('PEXPIRE', KEYS[k + 1], window)
  redis.call('SET', KEYS[k + 2], request_id, 'PX', window)
  redis.call('HINCRBY', KEYS[k + 3], arm .. ':exposures', 1)
  redis.call('SADD', KEYS[k + 4], user)
  i = i + 6 + n
  k = k + 5
end
return #ARGV
"""


class RedisExposureLog(ExposureLog):
    """Shared by every worker: one script call per batch of exposures (per shard on a cluster),
    one per batch of clicks."""

    def __init__(
        self,
        client: RedisClient,
        *,
        timeout_seconds: float,
        breaker: CircuitBreaker,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        prefix: str = keys.PREFIX,
        shards: int = 16,
        owns_client: bool = False,
    ) -> None:
        self._redis = client
        self._owns_client = owns_client
        self._timeout = timeout_seconds
        self._breaker = breaker
        self._window_ms = max(1, round(window_seconds * 1000))
        self._maxlen = -(-stream_maxlen // shards)  # the bound is shared by the shards
        self._prefix = prefix
        self._shards = shards
        self._attribute = LuaScript(_ATTRIBUTE_LUA)
        self._record = LuaScript(_RECORD_LUA)
        self._discovery = Discovery(client)

    def _tag(self, user_id: str) -> str:
        return keys.shard_tag(keys.shard_of(user_id, self._shards), self._prefix)

    async def _call(self, operation: Callable[[], Awaitable[_T]], what: str) -> _T:
        return await guarded(
            self._breaker, self._timeout, operation, what, ready=self._discovery.ready
        )

    async def record(self, exposures: Sequence[Exposure]) -> None:
        if not exposures:
            return

        def call(group: list[Exposure]) -> tuple[list[str], list[EncodableT]]:
            script_keys: list[str] = []
            args: list[EncodableT] = [self._maxlen, self._window_ms]
            for exposure in group:
                tag = self._tag(exposure.user_id)
                script_keys += [
                    f"{tag}exposures",
                    f"{tag}req:{exposure.request_id}",
                    f"{tag}last:{exposure.user_id}",
                    f"{tag}xp:{exposure.experiment}:counts",
                    f"{tag}xp:{exposure.experiment}:users:{exposure.arm}",
                ]
                args += [
                    exposure.request_id,
                    exposure.user_id,
                    exposure.experiment,
                    exposure.arm,
                    orjson.dumps(exposure.record()),
                    len(exposure.items),
                    *exposure.items,
                ]
            return script_keys, args

        groups = slot_groups(self._redis, exposures, lambda e: self._tag(e.user_id))

        async def run_all() -> None:
            await self._record.many(self._redis, [call(group) for group in groups])

        await self._call(run_all, "exposure write")

    async def attribute(self, clicks: Sequence[Click]) -> list[Attribution | None]:
        if not clicks:
            return []
        indexed = list(enumerate(clicks))

        def call(group: list[tuple[int, Click]]) -> tuple[list[str], list[str]]:
            script_keys: list[str] = []
            args: list[str] = []
            for _, click in group:
                tag = self._tag(click.user_id)
                script_keys.append(f"{tag}last:{click.user_id}")
                args += [tag, click.user_id, click.item_id, click.request_id or ""]
            return script_keys, args

        groups = slot_groups(self._redis, indexed, lambda pair: self._tag(pair[1].user_id))

        async def run_all() -> list[Any]:
            return await self._attribute.many(self._redis, [call(group) for group in groups])

        found: dict[int, Any] = {}
        for group, raw in zip(groups, await self._call(run_all, "click attribution"), strict=True):
            found.update((index, entry) for (index, _), entry in zip(group, raw, strict=True))
        return [self._attribution(found[index]) for index in range(len(clicks))]

    @staticmethod
    def _attribution(entry: Any) -> Attribution | None:
        if not entry:
            return None
        return Attribution(
            experiment=entry[0].decode(),
            arm=entry[1].decode(),
            request_id=entry[2].decode(),
            position=int(entry[3]),
            counted=int(entry[4]) == 1,
        )

    async def counts(self, experiment: str, arms: Iterable[str]) -> dict[str, ArmCounts]:
        names = list(arms)

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:  # grouped by node
                for shard in range(self._shards):
                    tag = keys.shard_tag(shard, self._prefix)
                    pipe.hgetall(f"{tag}xp:{experiment}:counts")
                    for arm in names:
                        pipe.scard(f"{tag}xp:{experiment}:users:{arm}")
                return list(await pipe.execute())

        raw = await self._call(read, "report counts")
        tally: dict[str, int] = {}
        users = dict.fromkeys(names, 0)
        step = 1 + len(names)
        for shard in range(self._shards):
            for key, value in raw[shard * step].items():
                tally[key.decode()] = tally.get(key.decode(), 0) + int(value)
            for arm, arm_users in zip(
                names, raw[shard * step + 1 : (shard + 1) * step], strict=True
            ):
                users[arm] += int(arm_users)
        return {
            arm: ArmCounts(
                users=users[arm],
                exposures=tally.get(f"{arm}:exposures", 0),
                clicks=tally.get(f"{arm}:clicks", 0),
                clicked_exposures=tally.get(f"{arm}:clicked_exposures", 0),
            )
            for arm in names
        }

    async def recent(self, count: int) -> list[dict[str, Any]]:
        """The newest `count` of all the shards (by stream id, that is by the nodes' clocks)."""

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in range(self._shards):
                    pipe.xrevrange(f"{keys.shard_tag(shard, self._prefix)}exposures", count=count)
                return list(await pipe.execute())

        merged = [
            entry for entries in await self._call(read, "exposure read") for entry in entries or []
        ]

        def stream_id(entry: Any) -> tuple[int, int]:
            ms, _, seq = entry[0].decode().partition("-")
            return int(ms), int(seq or 0)

        merged.sort(key=stream_id, reverse=True)
        return [orjson.loads(fields[b"record"]) for _, fields in merged[:count]]

    async def connect(self) -> bool:
        return await self._discovery.wait()

    async def close(self) -> None:
        await self._discovery.close()
        if self._owns_client:
            await self._redis.aclose()


def open_exposure_log(settings: Settings) -> ExposureLog:
    """Redis when configured (shared by workers, any `DUET_REDIS_MODE`), else in-process.

    Its deadline is at least `TRACKING_TIMEOUT_FLOOR_MS`: a read on the request path can fall
    back, but a lost exposure biases the report, so tracking waits a little longer.
    """
    window = settings.attribution_window_seconds
    if not settings.uses_redis:
        return MemoryExposureLog(
            window_seconds=window, stream_maxlen=settings.exposure_stream_maxlen
        )
    timeout = max(settings.redis_timeout_ms, TRACKING_TIMEOUT_FLOOR_MS) / 1000
    client = open_client(
        settings, connect_timeout=timeout, max_connections=settings.redis_max_connections
    )
    breaker = CircuitBreaker(
        failures=settings.breaker_failures, cooldown_seconds=settings.breaker_cooldown_seconds
    )
    return RedisExposureLog(
        client,
        timeout_seconds=timeout,
        breaker=breaker,
        window_seconds=window,
        stream_maxlen=settings.exposure_stream_maxlen,
        shards=settings.experiment_shards,
        owns_client=True,
    )
