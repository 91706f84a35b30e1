"""The processes a failure drill needs (redis-server, one service worker) and what it reads off
them: /metrics samples, RSS, open files, Redis clients. Shared by chaos_redis, overload, soak.

Built on bench/processes.py (free loopback ports, one log per child, stop by pid, deadlines on
every wait); this module adds a redis-server that can persist, be killed and come back on the
same port, which the Redis chaos drill needs and the benchmark does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH_DIR))

from client import Answer, Request, drive  # noqa: E402 (after the path above, as below)
from processes import (  # noqa: E402 (bench/ is a directory of scripts, not a package)
    LOOPBACK,
    BenchError,
    Child,
    free_port,
    redis_ping,
    require_tool,
    rss_mb,
    start,
    wait_http,
)

from service.catalog.columns import read_strings  # noqa: E402

__all__ = [
    "LOOPBACK",
    "BenchError",
    "Child",
    "RedisProcess",
    "Sample",
    "cpu_seconds",
    "free_port",
    "open_files",
    "redis_info",
    "require_tool",
    "rss_mb",
    "run_drill",
    "running_stack",
    "scrape",
    "service_cpu",
    "start_service",
    "users_and_items",
    "warm_users",
    "wrk_env",
]


@dataclass
class RedisProcess:
    """A loopback redis-server on a fixed port; with `data_dir`, every write is fsynced to an
    append-only file before Redis acknowledges it, so a SIGKILL loses nothing acknowledged."""

    log_dir: Path
    data_dir: Path | None = None
    port: int = field(default_factory=free_port)
    child: Child | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        binary = require_tool("redis-server", "sudo apt-get install -y redis-server")
        argv = [binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", ""]
        if self.data_dir is None:
            argv += ["--appendonly", "no"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
        self.starts += 1
        self.child = start(f"redis-{self.starts}", argv, self.log_dir)
        deadline = time.monotonic() + timeout_s
        while not redis_ping(self.port):
            self.child.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server did not answer PING within {timeout_s:.0f}s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save, connections dropped mid-flight."""
        if self.child is not None and self.child.popen.poll() is None:
            self.child.popen.send_signal(signal.SIGKILL)
            self.child.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


@contextlib.contextmanager
def service_cpu(pin: bool) -> Iterator[int | None]:
    """On a machine of 2+ CPUs, the last CPU for the service and the others for this process
    and what it starts from now on (redis-server, wrk, the probe): on a small box the load
    generator otherwise takes the service's CPU time, and the latencies measure that. Yields
    the service's CPU (None: not pinned); this process's affinity is restored on the way out."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        yield None
        return
    os.sched_setaffinity(0, cpus[:-1])
    try:
        yield cpus[-1]
    finally:
        os.sched_setaffinity(0, cpus)


def start_service(
    bundle: Path, redis_url: str, log_dir: Path, env: dict[str, str], ready_timeout_s: float
) -> tuple[Child, str]:
    """`python -m service`, one worker (so its pid is the worker's), ready on a free port."""
    port = free_port()
    service_env = {
        "DUET_BUNDLE": str(bundle.resolve()),
        "DUET_REDIS_URL": redis_url,
        "DUET_HOST": LOOPBACK,
        "DUET_PORT": str(port),
        "DUET_WORKERS": "1",
        "DUET_LOG_LEVEL": "warning",
        **env,
    }
    child = start("service", [sys.executable, "-m", "service"], log_dir, env=service_env)
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(child, f"{base}/readyz", ready_timeout_s)
    except BenchError:
        child.stop()
        raise
    return child, base


def users_and_items(bundle: Path) -> tuple[list[str], list[str]]:
    """Known users, and items most popular first (the bundle's own files)."""
    try:
        users = read_strings(bundle, "user_ids")
        items = read_strings(bundle, "item_ids")
        popular = [str(p["item_id"]) for p in json.loads((bundle / "popularity.json").read_text())]
    except (OSError, ValueError, KeyError) as e:
        raise BenchError(f"{bundle} is not a readable Duet bundle ({e})") from e
    known = set(items)
    return users, list(dict.fromkeys([p for p in popular if p in known] + items))


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    """One /metrics scrape: (name, labels, value) series, summed on request."""

    at: float
    series: tuple[tuple[str, dict[str, str], float], ...]

    def total(self, name: str, **labels: str) -> float:
        return sum(
            v
            for n, lab, v in self.series
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def quantile(self, name: str, q: float, **labels: str) -> float | None:
        """Upper bound (seconds) of the histogram bucket holding quantile `q`; None if empty."""
        buckets: dict[float, float] = {}
        for n, lab, v in self.series:
            if n == f"{name}_bucket" and all(lab.get(k) == w for k, w in labels.items()):
                le = float(lab["le"])
                buckets[le] = buckets.get(le, 0.0) + v
        count = buckets.get(float("inf"), 0.0)
        if count <= 0:
            return None
        return next(le for le in sorted(buckets) if buckets[le] >= q * count)

    def minus(self, earlier: Sample) -> Sample:
        """Counter and histogram increase since `earlier` (gauges are meaningless here)."""
        before = {(n, tuple(sorted(lab.items()))): v for n, lab, v in earlier.series}
        moved = tuple(
            (n, lab, v - before.get((n, tuple(sorted(lab.items()))), 0.0))
            for n, lab, v in self.series
        )
        return Sample(self.at, moved)


def scrape(base: str, timeout_s: float = 5.0) -> Sample:
    with urllib.request.urlopen(f"{base}/metrics", timeout=timeout_s) as resp:  # noqa: S310
        text = resp.read().decode()
    series = tuple(
        (name, dict(_LABEL.findall(labels or "")), float(value))
        for name, labels, value in _SAMPLE.findall(text)
    )
    return Sample(time.monotonic(), series)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_info(port: int, section: str, timeout_s: float = 2.0) -> dict[str, str]:
    """`INFO <section>` over a plain socket (RESP bulk string), as key -> value."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while b"\r\n" not in data or len(data) < _bulk_end(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    text = data.split(b"\r\n", 1)[1].decode(errors="replace")
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )


def _bulk_end(data: bytes) -> int:
    header, _, _ = data.partition(b"\r\n")
    if not header.startswith(b"$"):
        raise BenchError(f"unexpected INFO reply {header[:80]!r}")
    return len(header) + 2 + int(header[1:]) + 2


async def warm_users(base: str, users: list[str], rounds: int = 20) -> None:
    """One recommend per known user: embeddings cached in Redis and in the worker. A shed
    (503 + Retry-After) is tried again in the next round, as a well-behaved client would."""
    pending = list(users)
    for _ in range(rounds):
        out: list[Answer] = []
        await drive(
            base, "warm", _recommend_each(pending), rate_per_s=1e6, connections=4,
            until=time.monotonic() + 120, max_requests=len(pending), out=out,
        )  # fmt: skip
        if any(a.status not in (200, 503) for a in out):
            raise BenchError(f"warm-up recommend answered {sorted({a.status for a in out})}")
        pending = [str(a.tag) for a in out if a.status == 503]
        if not pending:
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"warm-up: {len(pending)} users still shed after {rounds} rounds")


def _recommend_each(users: list[str]) -> Callable[[], tuple[Request, object]]:
    queue = iter(users)

    def next_request() -> tuple[Request, object]:
        user = next(queue, users[0])
        return ("POST", "/v1/recommend", json.dumps({"user_id": user, "k": 10}).encode()), user

    return next_request


def wrk_env(tmp: Path, users: list[str], items: list[str]) -> dict[str, str]:
    """The id files bench/lua's scripts read."""
    (tmp / "users.txt").write_text("\n".join(users) + "\n", encoding="utf-8")
    (tmp / "items.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    return {"DUET_BENCH_USERS": str(tmp / "users.txt"), "DUET_BENCH_ITEMS": str(tmp / "items.txt")}


def with_service_log(error: BenchError, service: Child | None) -> BenchError:
    """`error`, with the tail of the service's log when there is a service to blame."""
    tail = f"\n--- service log (tail) ---\n{service.tail()}" if service else ""
    return BenchError(f"{error}{tail}")


@contextlib.contextmanager
def running_stack(
    bundle: Path, tmp: Path, env: dict[str, str], *, redis_data_dir: Path | None = None
) -> Iterator[tuple[RedisProcess, Child, str]]:
    """redis-server and one service worker on loopback, both stopped on the way out; a
    BenchError raised inside carries the tail of the service's log."""
    redis = RedisProcess(tmp, data_dir=redis_data_dir)
    redis.start()
    service = None
    try:
        service, base = start_service(bundle, redis.url, tmp, env, 180.0)
        yield redis, service, base
    except BenchError as e:
        raise with_service_log(e, service) from e
    finally:
        if service is not None:
            service.stop()
        redis.stop()


def run_drill(
    name: str,
    drill: Callable[[], dict[str, Any]],
    json_path: Path | None,
    misses: Callable[[dict[str, Any]], list[str]],
    *,
    shown: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> int:
    """Run a drill; print its figures (`shown` of them), write them all as JSON and name every
    missed target. The exit code: 2 when it could not run, 1 on a miss, else 0."""
    try:
        result = drill()
    except BenchError as e:
        print(f"{name}: FAILED: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result if shown is None else shown(result), indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    missed = misses(result)
    for line in missed:
        print(f"{name}: MISSED: {line}", file=sys.stderr)
    if not missed:
        print(f"{name}: every target met")
    return 1 if missed else 0
