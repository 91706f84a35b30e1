"""Past DUET_MAX_INFLIGHT or DUET_MAX_QUEUE_MS, requests are shed at once with 503 +
Retry-After; health is not, and nothing is shed once the burst is over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.types import Message, Receive, Scope, Send

from service.api.middleware import ServingMiddleware
from service.api.shedding import Shedder
from service.settings import Settings
from tests.service.api.helpers import metric, users
from tests.service.conftest import serve

JSON = {"content-type": "application/json"}


async def test_excess_requests_are_shed_and_nothing_after(bundle_dir: Path) -> None:
    user = users(bundle_dir)[0]
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"user_id": '
        await release.wait()  # the request stays in flight until the test lets it go
        yield b'"%s"}' % user.encode()

    async with serve(Settings(bundle=bundle_dir, max_inflight=2)) as (_, client):
        before = (await client.get("/metrics")).text
        held = [
            asyncio.create_task(client.post("/v1/recommend", content=slow_body(), headers=JSON))
            for _ in range(2)
        ]
        for _ in range(1_000):  # until both held requests (and this scrape) are in flight
            if metric((await client.get("/metrics")).text, "duet_inflight_requests") >= 3:
                break
            await asyncio.sleep(0.01)
        shed = await client.post("/v1/recommend", json={"user_id": user})
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["error"]["code"] == "overloaded"
        assert (await client.get("/healthz")).status_code == 200  # never shed
        assert (await client.get("/readyz")).status_code == 200

        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        after = await client.post("/v1/recommend", json={"user_id": user})
        assert after.status_code == 200  # the limit frees as requests finish
        text = (await client.get("/metrics")).text
        for name, labels in (
            ("duet_shed_total", {"reason": "inflight"}),
            ("duet_http_requests_total", {"route": "shed", "status": "503"}),
        ):
            assert metric(text, name, **labels) - metric(before, name, **labels) == 1


async def _call(app: ServingMiddleware, path: str) -> tuple[int, dict[bytes, bytes]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


async def test_requests_are_shed_while_the_event_loop_stays_behind() -> None:
    """In-flight stays at 0 here: only the loop's backlog says the worker is overloaded."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:  # never yields
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    shedder = Shedder(max_inflight=64, max_queue_ms=5)
    app = ServingMiddleware(answer, max_body_bytes=1024, shedder=shedder)
    assert (await _call(app, "/v1/recommend"))[0] == 200  # arms the 1 ms heartbeat
    time.sleep(0.03)  # noqa: ASYNC251 (the point: the loop busy 30 ms)
    assert (await _call(app, "/v1/recommend"))[0] == 200  # one stall is not a backlog
    await asyncio.sleep(0.005)  # the late heartbeat fires; the next request arms another
    assert (await _call(app, "/v1/recommend"))[0] == 200
    time.sleep(0.03)  # noqa: ASYNC251 (busy again right after: now it is a backlog)
    status, headers = await _call(app, "/v1/recommend")
    assert (status, headers[b"retry-after"]) == (503, b"1")
    assert (await _call(app, "/healthz"))[0] == 200  # never shed
    await asyncio.sleep(0.01)  # the loop catches up: its heartbeat fires
    assert (await _call(app, "/v1/recommend"))[0] == 200
