"""When a worker refuses a request at once: too many in flight, or its event loop too far behind.

Where a request is counted in flight matters. A warm recommend completes without ever yielding
to the event loop, so counted from when its handler starts, the count stays near 1 while
requests wait tens of milliseconds in the loop's queue, unseen by any handler (measured with
loadtest/overload.py: 512 connections, p50 81 ms, not one request shed at DUET_MAX_INFLIGHT=64).
So a request is counted from the moment the HTTP protocol parsed its headers when it came
through `early_shed.EarlySheddingProtocol` (the scope then carries ADMITTED), else from the
moment ServingMiddleware sees it; ServingMiddleware releases the count either way.

The optional queue rule (DUET_MAX_QUEUE_MS) sheds on the loop's lateness instead.
The queue is measured with a heartbeat: a request that finds none pending arms a timer due in
1 ms. While that timer is overdue the loop has been busy without a break, and a request
started now has waited in its queue at least as long. Only a backlog sheds: the previous
heartbeat must have been late as well, so one long step (a bundle swap) sheds nothing; it
made a reload under load answer 503s before this rule. The timer is armed only by requests, so
an idle worker never wakes up for it.
"""

from __future__ import annotations

import asyncio
import math
import time

import orjson
from prometheus_client import Counter, Histogram

from service import metrics
from service.errors import OverloadedError

TICK_S = 0.001
SHEDDER_STATE = "duet.shedder"  # lifespan state: how the HTTP protocol finds this worker's
ADMITTED = "duet.admitted"  # scope key: admitted and counted by the protocol already


def _overloaded_body() -> bytes:
    error = OverloadedError("this worker is at DUET_MAX_INFLIGHT or DUET_MAX_QUEUE_MS; retry")
    return orjson.dumps({"error": {"code": error.code, "message": error.message, "field": None}})


OVERLOADED_BODY = _overloaded_body()  # every 503 of a shed: Retry-After 1 goes with it


class Shedder:
    def __init__(self, *, max_inflight: int, max_queue_ms: int = 0) -> None:
        """`max_queue_ms` 0: the queue rule is off, only the in-flight limit sheds."""
        self.max_inflight = max_inflight
        self.inflight = 0
        self._max_queue = max_queue_ms / 1000 if max_queue_ms > 0 else math.inf  # seconds
        self._due = math.inf
        self._armed = False
        self._scheduled = 0.0
        self._last_late = 0.0  # how late the previous heartbeat fired
        self._children: dict[str, tuple[Counter, Histogram]] = {}

    def overloaded(self) -> str | None:
        """Why to shed the request about to start ("inflight", "queue"), or None to admit it.
        Call once per request under /v1/."""
        now = time.perf_counter()
        if not self._armed:
            self._armed = True
            self._due = self._scheduled = now + TICK_S
            asyncio.get_running_loop().call_later(TICK_S, self._tick)
        if self.inflight >= self.max_inflight:
            return "inflight"
        # a backlog, not one stall: the previous heartbeat was late too. A single long step (a
        # bundle swap's collection, a slow import) leaves no queue behind and sheds nothing.
        sustained = self._last_late > self._max_queue / 2
        return "queue" if sustained and now - self._due > self._max_queue else None

    def record_shed(self, reason: str, method: str, started: float) -> None:
        """Count a shed request: by reason, and as route "shed" in the request metrics."""
        metrics.SHED_BY_REASON[reason].inc()
        children = self._children.get(method)
        if children is None:
            children = self._children[method] = (
                metrics.HTTP_REQUESTS.labels("shed", method, "503", "none"),
                metrics.HTTP_DURATION.labels("shed", "none"),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def _tick(self) -> None:
        self._last_late = time.perf_counter() - self._scheduled
        self._armed = False
        self._due = math.inf
