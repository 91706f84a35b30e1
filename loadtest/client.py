"""A lean asyncio HTTP/1.1 client that records every answer: status, latency, send time.

wrk drives load cheaply but cannot say which request got which answer; the drills need that
(which event got 202, how long a shed 503 took, what recommend answered during an outage). Raw
keep-alive connections with pre-encoded requests keep the client's own cost small, so on a
shared 2-core box the figures measure the service rather than the client. Every read and
connect has a deadline; a transport error is recorded as status 0 and the connection reopened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import uvloop

Request = tuple[str, str, bytes | None]  # method, path, JSON body
READ_LIMIT = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # the caller's label: "recommend", "event", ...
    sent: float  # time.monotonic() when the request was written
    latency_s: float
    status: int  # 0: transport error or timeout
    retry_after: bytes | None
    body: bytes
    tag: object = None  # the caller's reference, e.g. the event sent


def encode(host: str, port: int, request: Request) -> bytes:
    method, path, body = request
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Connection:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, kind: str, request: Request, tag: object = None) -> Answer:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._reader is None or self._writer is None:
                    self._reader, self._writer = await asyncio.open_connection(
                        self.host, self.port, limit=READ_LIMIT
                    )
                self._writer.write(encode(self.host, self.port, request))
                status, retry_after, body = await _read_response(self._reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return Answer(kind, sent, time.monotonic() - sent, 0, None, b"", tag)
        return Answer(kind, sent, time.monotonic() - sent, status, retry_after, body, tag)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes | None, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, retry_after = 0, None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"retry-after":
            retry_after = value.strip()
    body = await reader.readexactly(length) if length else b""
    return status, retry_after, body


async def drive(
    base: str,
    kind: str,
    next_request: Callable[[], tuple[Request, object]],
    *,
    rate_per_s: float,
    connections: int,
    until: float,
    max_requests: int,
    out: list[Answer],
    timeout_s: float = 10.0,
) -> None:
    """`rate_per_s` requests a second over `connections` connections (exponential gaps per
    connection, so they do not fire in lockstep) until `until` (monotonic) or `max_requests`."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    budget = [max_requests]
    gap = connections / rate_per_s

    async def one_connection(seed: int) -> None:
        rng = random.Random(seed)
        conn = Connection(host, int(port), timeout_s)
        due = time.monotonic() + rng.uniform(0, gap)
        try:
            while budget[0] > 0:
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                if time.monotonic() >= until:
                    return
                budget[0] -= 1
                request, tag = next_request()
                out.append(await conn.send(kind, request, tag))
                due = max(due + rng.expovariate(1 / gap), time.monotonic() - gap)
        finally:
            conn.close()

    await asyncio.gather(*(one_connection(i) for i in range(connections)))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop (a dependency of the service): a cheaper client loop."""
    return uvloop.run(coro)
