"""`python -m service` as a subprocess on a free port, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.service.redis_server import free_port


@contextmanager
def running_service(env: dict[str, str], *, ready_timeout: float = 60) -> Iterator[str]:
    port = free_port()
    full_env = {**os.environ, **env, "DUET_PORT": str(port), "DUET_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"service did not become ready:\n{stderr[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
