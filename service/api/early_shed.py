"""Shedding in the HTTP protocol: a request refused before uvicorn creates an ASGI task for it.

Why here and not in middleware: under a flood, what a refusal costs decides everyone's latency,
because the refusals and the admitted requests share one event loop. Refused in middleware, a
request costs an ASGI task, a scope walk through Starlette and two `send` calls; refused here,
it costs one `transport.write` of prebuilt bytes right after its headers are parsed. And the
in-flight count starts here: tasks created in one loop iteration start in the next, so a count
taken when the task starts never saw the requests queued behind it (the overload drill at
512 connections: not one request shed at an in-flight limit of 8, while requests waited
160 ms in the loop).

`python -m service` runs uvicorn with this protocol. It finds the worker's `Shedder` in the
lifespan state (SHEDDER_STATE); without one (another app) it is plain uvicorn. Pipelined
requests (another still being answered on the connection) and upgrades go the usual way, and
ServingMiddleware decides for them, so answers on a connection never change order.
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.api.shedding import ADMITTED, OVERLOADED_BODY, SHEDDER_STATE, Shedder

_SHED_HEADERS = (
    b"content-type: application/json\r\nretry-after: 1\r\ncontent-length: "
    + str(len(OVERLOADED_BODY)).encode()
    + b"\r\n"
)


class _Answered:
    """Stands in for the refused request's cycle: uvicorn's callbacks then drop its body
    (`response_complete`) and find the event they set when the connection is lost."""

    response_complete = True

    class _NoEvent:
        def set(self) -> None:
            pass

    message_event = _NoEvent()


ANSWERED = _Answered()


class EarlySheddingProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        shedder: Shedder | None = self.app_state.get(SHEDDER_STATE)
        busy = self.cycle is not None and not self.cycle.response_complete  # pipelined
        skip = busy or not self.url.startswith(b"/v1/") or self.parser.should_upgrade()
        if shedder is None or skip:
            super().on_headers_complete()
            return
        reason = shedder.overloaded()
        if reason is None:
            shedder.inflight += 1  # ServingMiddleware releases it when the request ends
            self.scope[ADMITTED] = True  # type: ignore[literal-required]
            super().on_headers_complete()
            return
        started = time.perf_counter()
        self._refuse()
        method = self.parser.get_method().decode("ascii", "replace")
        shedder.record_shed(reason, method, started)

    def _refuse(self) -> None:
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        head = [STATUS_LINE[503]]
        for name, value in self.server_state.default_headers:  # server, date
            head += (name, b": ", value, b"\r\n")
        head.append(_SHED_HEADERS)
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if self.parser.get_method() != b"HEAD":
            head.append(OVERLOADED_BODY)
        self.cycle = ANSWERED  # type: ignore[assignment]
        self.transport.write(b"".join(head))
        self.on_response_complete()  # what uvicorn does after a response: keep-alive timer
        if not keep_alive:
            self.transport.close()
