"""Past DUET_MAX_INFLIGHT, requests are shed at once with 503 + Retry-After; others are not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

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
            ("duet_shed_total", {}),
            ("duet_http_requests_total", {"route": "shed", "status": "503"}),
        ):
            assert metric(text, name, **labels) - metric(before, name, **labels) == 1
