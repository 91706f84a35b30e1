"""The large-catalog parts of the benchmark (`bench/run.py --scale`, i.e. `make bench-scale`).

- filters of a stated selectivity: the genres nearest 10% and 1% of the catalog, read from the
  bundle's own genre column, so the figures say how selective the filter really was;
- memory: RSS and PSS (smaps_rollup) of one worker, then of a two-worker service on the same
  bundle after the same traffic: PSS shows what the workers share through mapped files;
- time to ready, and a bundle reload under load (every answer during it must be 2xx).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import wrk
from processes import LOOPBACK, BenchError, free_port, memory_mb, start, wait_http

SELECTIVITIES = {"10": 0.10, "1": 0.01}


def genre_filters(bundle: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Env for the filter scripts (DUET_BENCH_GENRE_10 / _1) and each genre's real share."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    vocab = manifest["catalog"]["genre_vocab"]
    if not vocab:
        raise BenchError(f"{bundle}: the catalog has no genres to filter on")
    codes = np.load(bundle / "item_genres.npy", mmap_mode="r")
    share = np.bincount(codes, minlength=len(vocab)) / manifest["num_items"]
    env, info = {}, {}
    for key, target in SELECTIVITIES.items():
        code = int(np.argmin(np.abs(np.log(np.maximum(share, 1e-9) / target))))
        env[f"DUET_BENCH_GENRE_{key}"] = vocab[code]
        info[f"recommend_filter{key}"] = {"genre": vocab[code], "selectivity": float(share[code])}
    return env, info


def memory(pid: int) -> dict[str, float]:
    """Worker processes only: the supervisor of a multi-worker service holds no bundle."""
    processes = memory_mb(pid)
    workers = {p: m for p, m in processes.items() if p != pid} or processes
    return {
        "processes": len(workers),
        "rss_mb": round(sum(m["rss"] for m in workers.values()), 1),
        "pss_mb": round(sum(m["pss"] for m in workers.values()), 1),
        "max_worker_rss_mb": max(m["rss"] for m in workers.values()),
    }


def fresh_service(
    workers: int,
    *,
    service_env: dict[str, str],
    tmp: Path,
    run: dict[str, Any],
    duration_s: float,
    ready_timeout_s: float,
) -> dict[str, Any]:
    """A new service with `workers` workers, the only one mapping the bundle (PSS splits a page
    between every process that maps it), measured after `duration_s` of search traffic."""
    port = free_port()
    env = {**service_env, "DUET_PORT": str(port), "DUET_WORKERS": str(workers)}
    if workers > 1:  # python -m service creates it (one worker keeps metrics in memory)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / f"metrics-{workers}w")
    child = start(f"service-{workers}w", [sys.executable, "-m", "service"], tmp, env=env)
    try:
        started = time.monotonic()
        base = f"http://{LOOPBACK}:{port}"
        wait_http(child, base + "/readyz", ready_timeout_s)
        ready_s = time.monotonic() - started
        time.sleep(3.0)  # another worker may answer /readyz a little later
        wrk.run(base, "recommend_search", duration_s=duration_s, **run)
        return {"ready_s": round(ready_s, 2), **memory(child.popen.pid)}
    finally:
        child.stop()


def reload_under_load(
    base: str, token: str, run: dict[str, Any], duration_s: float
) -> dict[str, Any]:
    """Search traffic for `duration_s`; a reload of the serving bundle a quarter of the way in."""
    outcome: dict[str, Any] = {}

    def reload() -> None:
        time.sleep(duration_s / 4)
        request = urllib.request.Request(  # noqa: S310 (loopback http built by the harness)
            base + "/admin/bundles/reload",
            data=b"{}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=300) as resp:  # noqa: S310
            outcome["status"] = resp.status
            resp.read()
        outcome["reload_s"] = round(time.monotonic() - started, 2)

    thread = threading.Thread(target=reload)
    thread.start()
    result = wrk.run(base, "recommend_search", duration_s=duration_s, **run)
    thread.join(timeout=300)
    if "status" not in outcome:
        raise BenchError("the reload under load did not answer")
    return {**outcome, **result.as_dict()}
