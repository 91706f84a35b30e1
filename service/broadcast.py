"""Reload fan-out: a reload one worker accepted is repeated by every other worker.

`POST /admin/bundles/reload` reaches one worker; without this, the other workers of the same
deployment would keep serving the old arms. After a successful local reload the worker
publishes `{origin, arm, bundle}` on a Redis channel; every other worker subscribed to it runs
the same reload (waiting for its own reload to finish rather than refusing). A worker that
fails the repeated reload logs it and keeps its arms, exactly as for a local reload. Without
Redis there is a single process, and nothing to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.errors import RequestError
from service.lifecycle import Reloader

log = logging.getLogger(__name__)
CHANNEL = "duet:reload"
_FAILURES = (RedisError, OSError, TimeoutError)
_POLL_SECONDS = 0.1
_RETRY_SECONDS = 1.0


class ReloadFanout:
    def __init__(
        self, url: str, reloader: Reloader, *, timeout_seconds: float, channel: str = CHANNEL
    ) -> None:
        self.origin = uuid.uuid4().hex
        self._reloader = reloader
        self._timeout = timeout_seconds
        self._channel = channel
        # Subscriber reads poll every 0.1 s, so a socket deadline of seconds is safe.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=_POLL_SECONDS + 5,
            socket_connect_timeout=timeout_seconds,
        )
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self._stopping = asyncio.Event()

    async def publish(self, arm: str | None, bundle: Path | None) -> None:
        message = {"origin": self.origin, "arm": arm, "bundle": str(bundle) if bundle else None}
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.publish(self._channel, orjson.dumps(message))
        except _FAILURES as error:
            log.warning("reload not announced to other workers: %s", type(error).__name__)

    async def _apply(self, data: Any) -> None:
        try:
            message = orjson.loads(data)
            origin, arm, bundle = message["origin"], message["arm"], message["bundle"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed reload announcement")
            return
        if origin == self.origin:
            return
        try:
            await self._reloader.reload(
                arm=arm, bundle=Path(bundle) if bundle else None, wait=True, announce=False
            )
        except RequestError as error:
            log.warning("reload announced by another worker failed here: %s", error.message)

    async def _listen(self) -> None:
        # Stopped by an event, not by cancellation alone: redis-py's read timeouts can swallow
        # a cancel, which would leave this loop running forever.
        while not self._stopping.is_set():
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self.subscribed.set()
                    while not self._stopping.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=_POLL_SECONDS
                        )
                        if message is not None and message.get("type") == "message":
                            await self._apply(message["data"])
            except _FAILURES as error:
                self.subscribed.clear()
                log.warning("reload channel lost (%s); retrying", type(error).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _RETRY_SECONDS)

    def start(self) -> None:
        self._reloader.announce = self.publish
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        self._reloader.announce = None
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _POLL_SECONDS * 20)
            except TimeoutError:
                self._task.cancel()
        await self._redis.aclose()
