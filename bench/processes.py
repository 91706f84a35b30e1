"""Start, probe and stop the processes a benchmark needs, each on a free loopback port.

Every child gets its own session and log file, is stopped by its own pid, and every wait has a
deadline: a benchmark that cannot start says why (with the log's tail) instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """The benchmark cannot run or produced an invalid measurement; the message says why."""


def require_tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed; install it with: {install}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}:\n{self.tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout_s)


def start(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Child:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(  # noqa: S603 (argv built by the harness, no shell)
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Child(name, popen, log)


def wait_http(child: Child, url: str, timeout_s: float) -> None:
    """Poll `url` until it answers 2xx; fail early if the child dies."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback http)
                resp.read()
                return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.2)
    raise BenchError(
        f"{child.name} not ready at {url} after {timeout_s:.0f}s ({last}):\n{child.tail()}"
    )


def redis_ping(port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(log_dir: Path, timeout_s: float = 10.0) -> tuple[Child, str]:
    """A throwaway redis-server: loopback only, no persistence."""
    binary = require_tool("redis-server", "sudo apt-get install -y redis-server")
    port = free_port()
    child = start(
        "redis",
        [binary, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"],
        log_dir,
    )
    deadline = time.monotonic() + timeout_s
    while not redis_ping(port):
        child.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"redis-server did not answer PING within {timeout_s:.0f}s")
        time.sleep(0.1)
    return child, f"redis://{LOOPBACK}:{port}/0"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    total_kb = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        # A process may end while we look: it then holds no memory and has no children.
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
    return total_kb / 1024


def _tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
            pids.append(p)
    return pids


def memory_mb(pid: int) -> dict[int, dict[str, float]]:
    """RSS and PSS of a process and each descendant, from /proc/<pid>/smaps_rollup.

    PSS charges a shared page to each of its N mappers by 1/N: the sum over processes is what
    the machine really holds, so it is the figure that shows workers sharing mapped files."""
    out: dict[int, dict[str, float]] = {}
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError):
            fields = {}
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()[1:]:
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) / 1024
            out[p] = {"rss": round(fields["Rss"], 1), "pss": round(fields["Pss"], 1)}
    return out
