"""`python -m service`: uvicorn from DUET_* settings (uvloop, httptools, N workers).

The HTTP protocol is uvicorn's httptools one plus load shedding before any ASGI task exists
(service/api/early_shed.py).

Process model: uvicorn's supervisor *spawns* `DUET_WORKERS` fresh interpreters, each loading the
bundle itself. Sharing comes from the files, not from fork: every large bundle file is mapped
read-only, so N workers hold one copy in the page cache (measured in the README, "Scale"). A
fork-after-load model (gunicorn --preload) would share the same pages only until the first
reload, and forking a process that holds FAISS's OpenMP pool can hang the child (faiss #5206).
OMP_NUM_THREADS=1 is set before any worker starts: one request, one thread; parallelism comes
from workers. While a worker loads a bundle it still answers the supervisor's health pings
(the load runs in a thread and never holds the GIL for long), and `DUET_WORKER_HEALTHCHECK_SECONDS`
bounds how long the supervisor waits for a ping.

With more than one worker, Prometheus needs a shared multiprocess directory: it is created (or
emptied) here, before any worker imports prometheus_client.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import uvicorn

from service.settings import Settings

# by name: each worker imports it after the metrics directory exists (it imports the metrics)
HTTP_PROTOCOL = "service.api.early_shed:EarlySheddingProtocol"


def _prepare_multiprocess_metrics() -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="duet-metrics-")
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if settings.workers > 1:
        _prepare_multiprocess_metrics()
    uvicorn.run(
        "service.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=HTTP_PROTOCOL,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        # annotated int, used as a poll timeout in seconds: fractions work (the tests use them)
        timeout_worker_healthcheck=settings.worker_healthcheck_seconds,  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
