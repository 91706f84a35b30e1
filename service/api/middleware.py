"""One pure-ASGI middleware: body-size limit, in-flight gauge, request count and latency.

Pure ASGI (not BaseHTTPMiddleware) because it runs on every request: no extra task, no body
copy. Labels use the route template (`/v1/items/{item_id}/similar`), never the raw path, and
the arm the route chose (`scope["duet.arm"]`), so label cardinality stays bounded.
"""

from __future__ import annotations

import time

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.shedding import ADMITTED, OVERLOADED_BODY, Shedder
from service.errors import PayloadTooLargeError


def _too_large_body(limit: int) -> bytes:
    message = f"request body larger than {limit} bytes"
    error = {"code": "payload_too_large", "message": message, "field": "body"}
    return orjson.dumps({"error": error})


class ServingMiddleware:
    """Also the load shedder of requests the HTTP protocol did not already admit (early_shed.py
    decides there when the service runs under uvicorn): past the shedder's in-flight limit, or
    while the event loop stays too far behind (shedding.py), a request under /v1/ is answered
    503 + `Retry-After` before its body is read. Either way the in-flight count is released
    here when the request ends. Health, readiness, metrics and admin routes are never shed."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, shedder: Shedder) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.shedder = shedder
        # label children by (route template, method, status, arm): a bounded set, resolved once
        self._children: dict[tuple[str, str, int, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        shedder = self.shedder
        counted = bool(scope.get(ADMITTED))  # admitted and counted by the HTTP protocol
        if not counted and scope["path"].startswith("/v1/"):
            if (reason := shedder.overloaded()) is not None:
                await _send_json(send, 503, OVERLOADED_BODY, retry_after=True)
                shedder.record_shed(reason, scope["method"], started)
                return
            shedder.inflight += 1
            counted = True
        status = 500
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
            shedder.inflight -= counted
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
