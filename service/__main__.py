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
emptied) here, before any worker imports prometheus_client; so is the directory where each
worker marks itself ready (`DUET_WORKER_STATE_DIR`, see service/readiness.py), so that the
pod's /readyz means every worker is ready.

Bad settings, or a `DUET_REDIS_MODE` that contradicts the server, stop the command with one
line naming the setting (exit status 1) before any worker starts.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from service.settings import Settings

# by name: each worker imports it after the metrics directory exists (it imports the metrics)
HTTP_PROTOCOL = "service.api.early_shed:EarlySheddingProtocol"


def _prepare_shared_dir(variable: str, prefix: str, stale: str) -> None:
    """The directory the workers share through `variable`: a fresh temporary one, or the given
    one with the files a previous run left (`stale` glob) removed."""
    directory = os.environ.get(variable)
    if directory is None:
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob(stale):
        leftover.unlink()


def _settings_or_exit() -> Settings:
    try:
        settings = Settings()
    except ValidationError as error:
        problems = "; ".join(
            ("DUET_" + "_".join(str(p) for p in e["loc"]).upper() + ": " if e["loc"] else "")
            + str(e["msg"]).removeprefix("Value error, ")
            for e in error.errors(include_url=False)
        )
        sys.exit(f"duet: invalid settings: {problems}")
    return settings


def _check_redis_mode_or_exit(settings: Settings) -> None:
    # imported late all the same: nothing it pulls in may touch the metrics directory
    from service.redis_mode import RedisModeError, check_mode  # noqa: PLC0415

    try:
        check_mode(settings)
    except RedisModeError as error:
        sys.exit(f"duet: {error.message}")


def main() -> None:
    settings = _settings_or_exit()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if settings.workers > 1:
        _prepare_shared_dir("PROMETHEUS_MULTIPROC_DIR", "duet-metrics-", "*.db")
        _prepare_shared_dir("DUET_WORKER_STATE_DIR", "duet-workers-", "*.ready")
    _check_redis_mode_or_exit(settings)
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
