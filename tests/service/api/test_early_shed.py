"""The HTTP protocol sheds past the in-flight limit before the app sees the request: a real
uvicorn server on loopback, raw sockets, so keep-alive, bodies and answer order are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson
import uvicorn
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from service.api.early_shed import EarlySheddingProtocol
from service.api.middleware import ServingMiddleware
from service.api.shedding import SHEDDER_STATE, Shedder


@dataclass
class Held:
    """An app that answers 200 to each request once `release` is set, and notes each one."""

    shedder: Shedder
    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)  # every request uvicorn made a task for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"][SHEDDER_STATE] = self.shedder  # what create_app's lifespan yields
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.seen.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        if scope["path"].startswith("/v1/hold"):
            await self.release.wait()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(max_inflight: int) -> AsyncIterator[tuple[Held, int]]:
    held = Held(Shedder(max_inflight=max_inflight))
    middleware = ServingMiddleware(held, max_body_bytes=1024, shedder=held.shedder)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            held.tasks.append(scope["path"])
        await middleware(scope, receive, send)

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, http=EarlySheddingProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield held, port
    finally:
        held.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def request(path: str, body: bytes = b"", version: str = "1.1") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode().strip().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def shed_count() -> float:
    return REGISTRY.get_sample_value("duet_shed_total", {"reason": "inflight"}) or 0.0


async def test_excess_is_refused_before_the_app_and_the_connection_stays_usable() -> None:
    async with serving(max_inflight=1) as (held, port):
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(request("/v1/hold"))
        await until(lambda: held.seen == ["/v1/hold"])
        before = shed_count()

        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(request("/v1/recommend", b'{"user_id": "u1"}'))  # its body is dropped
        status, headers, body = await answer(r2)
        assert (status, headers["retry-after"]) == (503, "1")
        assert orjson.loads(body)["error"]["code"] == "overloaded"
        assert "connection" not in headers  # keep-alive
        assert held.tasks == ["/v1/hold"]  # no ASGI task, no middleware: refused in the protocol
        assert shed_count() - before == 1

        w2.write(request("/healthz"))  # outside /v1/: never shed, same connection
        assert (await answer(r2))[0] == 200

        held.release.set()
        assert (await answer(r1))[0] == 200
        await until(lambda: held.shedder.inflight == 0)  # released by the middleware
        w2.write(request("/v1/recommend", b"{}"))
        assert (await answer(r2))[0] == 200  # the limit frees once the held one is done
        assert held.seen == ["/v1/hold", "/healthz", "/v1/recommend"]
        for writer in (w1, w2):
            writer.close()


async def test_a_refused_http_1_0_request_closes_its_connection() -> None:
    async with serving(max_inflight=1) as (held, port):
        _, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(request("/v1/hold"))
        await until(lambda: len(held.seen) == 1)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(request("/v1/recommend", version="1.0"))
        status, headers, _ = await answer(r2)
        assert (status, headers["connection"]) == (503, "close")
        assert await asyncio.wait_for(r2.read(), 5) == b""  # closed by the server
        w1.close()
        w2.close()


async def test_pipelined_requests_keep_their_order() -> None:
    """The second request arrives while the first is in flight on the same connection: the
    protocol leaves it to the middleware, which admits it once the first is done."""
    async with serving(max_inflight=1) as (held, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("/v1/hold") + request("/v1/second"))
        await until(lambda: len(held.seen) == 1)
        held.release.set()
        assert [(await answer(reader))[0] for _ in range(2)] == [200, 200]
        assert held.seen == ["/v1/hold", "/v1/second"]
        writer.close()
