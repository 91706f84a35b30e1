"""Keeps an in-process copy of Redis user state coherent: invalidations over pub/sub.

The event-append script PUBLISHes `<origin>:<user id>` for every user it changes on
`duet:invalidate`; a
subscribed connection of ours (to any node: classic PUBLISH reaches every node of a cluster;
to the master under Sentinel) drops that user at once. This replaced `CLIENT TRACKING ...
BCAST`, which a cluster node reports only for its own keys and whose prefix cannot pick `ver`
out of hash-tagged names. Redis-side expiries and flushes are not announced: the local layer's
own TTL (`DUET_CACHE_TTL_SECONDS`) bounds them. While the listener is not subscribed, `healthy`
is False and the local layer is bypassed (and emptied on reconnect), so it never serves a state
Redis has since changed. A per-user sequence number closes the race between a fetch in flight
and an invalidation that lands before its result is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable

from redis.exceptions import RedisError

from service.store.clients import PubSubNodes
from service.store.guard import FAILURES
from service.store.keys import INVALIDATE_CHANNEL

log = logging.getLogger(__name__)
CHANNEL = INVALIDATE_CHANNEL
_SEQ_MEMORY = 100_000  # per-user invalidation sequence numbers remembered


class InvalidationListener:
    def __init__(
        self,
        nodes: PubSubNodes,
        *,
        on_invalidate: Callable[[str | None], None],
        timeout_s: float,
        retry_s: float = 1.0,
    ) -> None:
        self._nodes = nodes
        self._on_invalidate = on_invalidate
        self.origin = uuid.uuid4().hex[:16]
        """Prefixes what this process publishes ("<origin>:<user>"): its own are skipped, since
        it already forgot those users when it wrote (`forget`)."""
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

    def forget(self, user_id: str) -> None:
        """This process changed the user: drop it now, and refuse fetches already in flight."""
        self._invalidate(user_id)

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
            except (*FAILURES, StopIteration) as exc:
                log.warning("local cache disabled, invalidations lost: %s", exc)
            self.healthy = False
            self._invalidate(None)
            await asyncio.sleep(self._retry)

    async def _listen(self) -> None:
        client = await self._nodes.connect(socket_timeout=self._timeout * 4)
        pubsub = client.pubsub()
        try:
            async with asyncio.timeout(self._timeout * 4):
                await pubsub.subscribe(CHANNEL)
                await pubsub.get_message(timeout=self._timeout)  # the subscribe confirmation
            self._invalidate(None)  # whatever we held may have changed while we were away
            self.healthy = True
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    await pubsub.ping()  # a silent node is found out within seconds
                    continue
                if message.get("type") != "message":
                    continue
                origin, _, user_id = message["data"].decode().partition(":")
                if origin != self.origin:
                    self._invalidate(user_id)
        finally:
            self.healthy = False
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # bounded: redis-py can hold a cancelled connect/subscribe open for a while
            await asyncio.wait({self._task}, timeout=self._timeout)
            self._task = None
