"""Soak: half of capacity for --minutes; does anything grow that should not?

    python loadtest/soak.py --bundle bundles/demo                 (or: make soak; 10 minutes)
    python loadtest/soak.py --bundle bundles/demo --minutes 1     (a quick check)

Starts redis-server and one service worker, warms every known user, measures the capacity of
the soak's mix (bench/lua/soak_mix.lua: warm recommend 80%, recommend for new users with a
history 10% (the tower and the cache writes), events 10% (history appends, cache
invalidation); wrk, 32 closed-loop connections, 5 s; or takes --rps as capacity), then drives
half of it for --minutes with one paced wrk run of the same mix (the pause calibrated on 5 s
runs first). Every --interval seconds it samples the worker's RSS, its open file descriptors
(/proc/<pid>/fd) and Redis' connected_clients (INFO clients).

After the warm-up (the first --warmup-share of the run), checks (exit 1 naming each miss):
RSS growth <= --max-rss-growth % (default 5), open files and Redis connections flat (the last
sample at most a few above the first), 0 errors (wrk: non-2xx, timeouts, socket errors), and
the rate achieved within 40-60% of capacity (a soak at another load proves something else).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import client
import stack
import wrk

SCRIPT = "soak_mix"
CONNECTIONS = 32  # paced, so far more than the half-capacity load needs
CALIBRATE_S = 5.0
SHARE, SHARE_SLACK = 0.5, 0.1  # of capacity: the load, and how far off it may land
FD_SLACK, CLIENT_SLACK = 8, 4  # transient sockets (scrapes, reconnects) are not a leak


@dataclass(frozen=True)
class Point:
    t_s: float
    rss_mb: float
    open_files: int
    redis_clients: int


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"), help="bundle directory")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    p.add_argument("--rps", type=float, help="capacity in req/s (default: measured first)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup-share", type=float, default=0.1, help="share of the run not judged")
    p.add_argument("--max-rss-growth", type=float, default=5.0, help="target: RSS growth, %%")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or (args.rps is not None and args.rps <= 0):
        p.error("--minutes, --interval and --rps must be positive")
    if not 0 <= args.warmup_share < 1:
        p.error("--warmup-share must be in [0, 1)")
    if args.minutes * 60 * (1 - args.warmup_share) < 2 * args.interval:
        p.error("the judged part of the run needs at least two samples: lower --interval")
    return args


def _sample(pid: int, redis_port: int, started: float) -> Point:
    clients = stack.redis_info(redis_port, "clients").get("connected_clients", "-1")
    return Point(
        round(time.monotonic() - started, 1),
        round(stack.rss_mb(pid), 1),
        stack.open_files(pid),
        int(clients) - 1,  # not counting the connection asking
    )


def _drive(base: str, pause_ms: float, seconds: float, env: dict[str, str]) -> wrk.WrkResult:
    return wrk.run(
        base, SCRIPT, threads=1, connections=CONNECTIONS, duration_s=seconds, env=env,
        delay_ms=pause_ms,
    )  # fmt: skip


def _pace(base: str, target_rps: float, env: dict[str, str]) -> float:
    """The mean pause (ms) per connection giving `target_rps`: a first guess that ignores
    latency, corrected twice from short runs (rate = connections / (pause + latency))."""
    pause = CONNECTIONS * 1000 / target_rps
    for _ in range(2):
        rate = _drive(base, pause, CALIBRATE_S, env).rps
        latency = CONNECTIONS * 1000 / rate - pause
        # never below a quarter of the first guess: the pacing must not turn into a flood
        pause = max(CONNECTIONS * 250 / target_rps, CONNECTIONS * 1000 / target_rps - latency)
    return pause


def soak(args: argparse.Namespace) -> dict[str, Any]:
    stack.require_tool("wrk", wrk.INSTALL_WRK)
    users, items = stack.users_and_items(args.bundle)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="duet-soak-") as tmp_name:
        tmp = Path(tmp_name)
        with stack.running_stack(args.bundle, tmp, {}) as (redis, service, base):
            pid = service.popen.pid
            env = stack.wrk_env(tmp, users, items)
            print(f"soak: warming {len(users)} users", flush=True)
            client.run(stack.warm_users(base, users))
            capacity = args.rps
            if capacity is None:
                measured = wrk.run(base, SCRIPT, threads=1, connections=32, duration_s=5, env=env)
                capacity = measured.ok_rps
            print(f"soak: capacity {capacity:,.0f} req/s; {seconds:.0f} s at half", flush=True)
            pause_ms = _pace(base, capacity * SHARE, env)
            before = stack.scrape(base)
            started = time.monotonic()
            points = [_sample(pid, redis.port, started)]
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                load = pool.submit(_drive, base, pause_ms, seconds, env)
                next_at = args.interval
                while next_at <= seconds - 1.0 and not load.done():  # not while wrk winds down
                    time.sleep(max(0.0, started + next_at - time.monotonic()))
                    service.check_alive()
                    points.append(_sample(pid, redis.port, started))
                    print(f"soak: {points[-1]}", flush=True)
                    next_at += args.interval
                run = load.result()
            served = stack.scrape(base).minus(before)
    return _report(args, capacity, run, points, served)


def _report(
    args: argparse.Namespace, capacity: float, run: wrk.WrkResult, points: list[Point],
    served: stack.Sample,
) -> dict[str, Any]:  # fmt: skip
    judged = [p for p in points if p.t_s >= args.warmup_share * args.minutes * 60] or points[-1:]
    first, last = judged[0], judged[-1]
    server_errors = sum(
        v for n, lab, v in served.series
        if n == "duet_http_requests_total" and lab.get("status", "").startswith("5")
    )  # fmt: skip
    return {
        "capacity_rps": round(capacity, 1),
        "target_rps": round(capacity * SHARE, 1),
        "achieved_rps": run.rps,
        "achieved_share": round(run.rps / capacity, 3),
        "wrk": run.as_dict(),
        "answered": {
            route: served.total("duet_http_requests_total", route=route)
            for route in ("/v1/recommend", "/v1/events")
        },
        "errors": {"wrk": sum(run.errors.values()), "server_5xx": server_errors},
        "after_warmup": {
            "rss_mb": [first.rss_mb, last.rss_mb],
            "rss_growth_pct": round((last.rss_mb - first.rss_mb) / first.rss_mb * 100, 2),
            "open_files": [first.open_files, last.open_files],
            "open_files_range": [
                min(p.open_files for p in judged),
                max(p.open_files for p in judged),
            ],
            "redis_clients": [first.redis_clients, last.redis_clients],
            "redis_clients_range": [
                min(p.redis_clients for p in judged),
                max(p.redis_clients for p in judged),
            ],
        },
        "samples": [asdict(p) for p in points],
    }


def misses(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = []
    judged = result["after_warmup"]
    if judged["rss_growth_pct"] > args.max_rss_growth:
        out.append(f"RSS grew {judged['rss_growth_pct']}% (target <= {args.max_rss_growth}%)")
    first, last = judged["open_files"]
    if last > first + FD_SLACK:
        out.append(f"open files {first} -> {last} (target: flat, +{FD_SLACK} at most)")
    first, last = judged["redis_clients"]
    if last > first + CLIENT_SLACK:
        out.append(f"Redis connections {first} -> {last} (target: flat, +{CLIENT_SLACK} at most)")
    if result["errors"]["wrk"] or result["errors"]["server_5xx"]:
        out.append(f"errors {result['errors']} (target 0)")
    if abs(result["achieved_share"] - SHARE) > SHARE_SLACK:
        out.append(
            f"achieved {result['achieved_share']:.0%} of capacity, not {SHARE:.0%} "
            f"(+-{SHARE_SLACK:.0%}): this run is not the soak asked for"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return stack.run_drill(
        "soak",
        lambda: soak(args),
        args.json,
        lambda result: misses(result, args),
        shown=lambda r: {k: v for k, v in r.items() if k != "samples"},
    )


if __name__ == "__main__":
    sys.exit(main())
