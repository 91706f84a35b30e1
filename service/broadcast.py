"""Reload fan-out: a reload one worker accepted is repeated by every other worker.

`POST /admin/bundles/reload` reaches one worker; without this, the other workers of the same
deployment would keep serving the old arms. After a successful local reload the worker
publishes `{origin, arm, bundle}` on a Redis channel; every other worker subscribed to it runs
the same reload (waiting for its own reload to finish rather than refusing). A worker that
fails the repeated reload logs it and keeps its arms, exactly as for a local reload. Without
Redis there is a single process, and nothing to tell. On a cluster the subscription and the
publish each use one node (`PubSubNodes`, the next one when it fails): classic PUBLISH is
broadcast to every node of the cluster.
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

from service.errors import RequestError
from service.lifecycle import Reloader
from service.settings import Settings
from service.store.clients import PubSubNodes
from service.store.guard import FAILURES

log = logging.getLogger(__name__)
CHANNEL = "duet:reload"
_FAILURES = FAILURES
_POLL_SECONDS = 0.1
_RETRY_SECONDS = 1.0


class ReloadFanout:
    def __init__(
        self,
        settings: Settings,
        reloader: Reloader,
        *,
        timeout_seconds: float,
        channel: str = CHANNEL,
    ) -> None:
        self.origin = uuid.uuid4().hex
        self._reloader = reloader
        self._timeout = timeout_seconds
        self._channel = channel
        self._nodes = PubSubNodes(settings, timeout_s=timeout_seconds)
        self._publisher: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self._stopping = asyncio.Event()

    async def publish(self, arm: str | None, bundle: Path | None) -> None:
        message = {"origin": self.origin, "arm": arm, "bundle": str(bundle) if bundle else None}
        try:
            async with asyncio.timeout(self._timeout):
                if self._publisher is None:
                    self._publisher = await self._nodes.connect(socket_timeout=self._timeout)
                await self._publisher.publish(self._channel, orjson.dumps(message))
        except _FAILURES as error:
            log.warning("reload not announced to other workers: %s", type(error).__name__)
            publisher, self._publisher = self._publisher, None
            if publisher is not None:
                with contextlib.suppress(*_FAILURES):
                    await publisher.aclose()

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
                # Subscriber reads poll every 0.1 s, so a socket deadline of seconds is safe.
                client = await self._nodes.connect(socket_timeout=_POLL_SECONDS + 5)
                try:
                    await self._subscribed(client)
                finally:
                    with contextlib.suppress(*_FAILURES):
                        await client.aclose()
            except _FAILURES as error:
                self.subscribed.clear()
                log.warning("reload channel lost (%s); retrying", type(error).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), _RETRY_SECONDS)

    async def _subscribed(self, client: aioredis.Redis) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            self.subscribed.set()
            idle = 0
            while not self._stopping.is_set():
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_POLL_SECONDS
                )
                if message is not None and message.get("type") == "message":
                    await self._apply(message["data"])
                idle = 0 if message is not None else idle + 1
                if idle >= 10:  # a killed node is noticed within a second or two
                    await pubsub.ping()
                    idle = 0

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
        if self._publisher is not None:
            with contextlib.suppress(*_FAILURES):
                await self._publisher.aclose()
