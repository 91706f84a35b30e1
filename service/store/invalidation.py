"""Keeps an in-process copy of Redis user state coherent: server-assisted client-side caching.

Redis `CLIENT TRACKING ... BCAST PREFIX duet:ver:` pushes the name of every history-version key
that changes (an event, an expiry, a flush) to a subscribed connection of ours; the local layer
drops that user at once. While the listener is not connected and tracking, `healthy` is False
and the local layer is bypassed (and emptied on reconnect), so it never serves a state Redis
has since changed. A per-user sequence number closes the race between a fetch in flight and
an invalidation that lands before its result is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
CHANNEL = "__redis__:invalidate"
_SEQ_MEMORY = 100_000  # per-user invalidation sequence numbers remembered


class InvalidationListener:
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        on_invalidate: Callable[[str | None], None],
        timeout_s: float,
        retry_s: float = 1.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._on_invalidate = on_invalidate
        self._timeout = timeout_s
        self._retry = retry_s
        self.healthy = False
        self.seq = 0
        self._user_seq: OrderedDict[str, int] = OrderedDict()
        self._forgotten_seq = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unchanged_since(self, user_id: str, seq: int) -> bool:
        """True if no invalidation touched `user_id` after sequence number `seq`."""
        if not self.healthy:
            return False
        last = self._user_seq.get(user_id)
        if last is None:
            return self._forgotten_seq <= seq
        return last <= seq

    def _invalidate(self, user_id: str | None) -> None:
        self.seq += 1
        if user_id is None:  # a flush: everything
            self._user_seq.clear()
            self._forgotten_seq = self.seq
        else:
            self._user_seq[user_id] = self.seq
            self._user_seq.move_to_end(user_id)
            if len(self._user_seq) > _SEQ_MEMORY:
                _, self._forgotten_seq = self._user_seq.popitem(last=False)
        self._on_invalidate(user_id)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, StopIteration) as exc:
                log.warning("local cache disabled, invalidations lost: %s", exc)
            self.healthy = False
            self._invalidate(None)
            await asyncio.sleep(self._retry)

    async def _listen(self) -> None:
        name = f"duet-invalidate-{uuid.uuid4().hex[:12]}"
        # RESP2: with RESP3 redis-py routes invalidation pushes away from the pub/sub reader.
        listener = aioredis.Redis.from_url(
            self._url, client_name=name, socket_connect_timeout=self._timeout, protocol=2
        )
        tracker = aioredis.Redis.from_url(
            self._url,
            single_connection_client=True,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            protocol=2,
        )
        pubsub = listener.pubsub()
        try:
            async with asyncio.timeout(self._timeout * 10):
                await pubsub.subscribe(CHANNEL)
                await pubsub.get_message(timeout=self._timeout)  # the subscribe confirmation
                clients = await tracker.client_list()
                client_id = next(c["id"] for c in clients if c.get("name") == name)
                await tracker.execute_command(  # type: ignore[no-untyped-call]
                    "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST",
                    "PREFIX", self._prefix,
                )  # fmt: skip
            self._invalidate(None)  # whatever we held may have changed while we were away
            self.healthy = True
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    await tracker.ping()  # the tracking registration lives on this connection
                    continue
                if message.get("type") != "message":
                    continue
                keys = message.get("data")
                if keys is None:
                    self._invalidate(None)
                    continue
                for key in keys:
                    self._invalidate(key.decode()[len(self._prefix) :])
        finally:
            self.healthy = False
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await listener.aclose()
                await tracker.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # bounded: redis-py can hold a cancelled connect/subscribe open for a while
            await asyncio.wait({self._task}, timeout=self._timeout)
            self._task = None
