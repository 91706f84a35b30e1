"""One pure-ASGI middleware: body-size limit, in-flight gauge, request count and latency.

Pure ASGI (not BaseHTTPMiddleware) because it runs on every request: no extra task, no body
copy. Labels use the route template (`/v1/items/{item_id}/similar`), never the raw path, and
the arm the route chose (`scope["duet.arm"]`), so label cardinality stays bounded.
"""

from __future__ import annotations

import math
import time

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.shedding import Shedder
from service.errors import OverloadedError, PayloadTooLargeError


def _too_large_body(limit: int) -> bytes:
    message = f"request body larger than {limit} bytes"
    error = {"code": "payload_too_large", "message": message, "field": "body"}
    return orjson.dumps({"error": error})


def _overloaded_body() -> bytes:
    error = OverloadedError("this worker is at DUET_MAX_INFLIGHT or DUET_MAX_QUEUE_MS; retry")
    return orjson.dumps({"error": {"code": error.code, "message": error.message, "field": None}})


class ServingMiddleware:
    """Also the load shedder: past `max_inflight` requests under /v1/ in this worker, or (when
    `max_queue_ms` is set) while its event loop stays that far behind (shedding.py), a request
    is answered 503 + `Retry-After` before its body is read, so an overloaded worker spends
    microseconds on the excess instead of queueing it behind everyone's deadlines. Health,
    readiness, metrics and admin routes are never shed."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_inflight: int = 64, max_queue_ms: int = 0
    ) -> None:
        self.app = app
        self.limit = max_body_bytes
        queue_s = max_queue_ms / 1000 if max_queue_ms > 0 else math.inf  # 0: in-flight only
        self.shedder = Shedder(max_inflight=max_inflight, max_queue_s=queue_s)
        self._overloaded = _overloaded_body()
        # label children by (route template, method, status, arm): a bounded set, resolved once
        self._children: dict[tuple[str, str, int, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        serving = scope["path"].startswith("/v1/")
        shedder = self.shedder
        if serving and (reason := shedder.overloaded()) is not None:
            metrics.SHED_BY_REASON[reason].inc()
            await _send_json(send, 503, self._overloaded, retry_after=True)
            self._count(("shed", scope["method"], 503, "none"), started)
            return
        status = 500
        shedder.inflight += serving
        metrics.INFLIGHT.inc()
        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.limit:
                status = 413
                await _send_json(send, 413, _too_large_body(self.limit))
                return

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            app_receive = receive if declared is not None else self._counting(receive)
            await self.app(scope, app_receive, send_status)
        finally:
            shedder.inflight -= serving
            metrics.INFLIGHT.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self._count((path, scope["method"], status, scope.get("duet.arm", "none")), started)

    def _count(self, key: tuple[str, str, int, str], started: float) -> None:
        children = self._children.get(key)
        if children is None:
            path, method, status, arm = key
            children = self._children[key] = (
                metrics.HTTP_REQUESTS.labels(path, method, str(status), arm),
                metrics.HTTP_DURATION.labels(path, arm),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    def _counting(self, receive: Receive) -> Receive:
        """Enforce the limit on bodies without a Content-Length (chunked)."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = f"request body larger than {self.limit} bytes"
                    raise PayloadTooLargeError(too_large, field="body")
            return message

        return counted


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, body: bytes, *, retry_after: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
