"""Overload drill: recommends arriving at several times capacity; is shedding cheap?

    python loadtest/overload.py --bundle bundles/demo              (or: make overload)
    python loadtest/overload.py --url http://127.0.0.1:8000 --bundle bundles/demo

Starts redis-server and one service worker (DUET_MAX_INFLIGHT=2 unless told; on its own CPU
unless --no-pin, wrk niced on the others) unless --url points at a running one, warms every
known user, measures capacity (wrk, a closed loop as wide as the in-flight limit, at most 32
connections, 2xx only) and the unloaded latency of a probe (our own client at --probe-rps, so
each answer's status and latency are known).
Then wrk offers --multiple times that capacity for --duration seconds: --overload-connections
connections, each pausing an exponential time between its requests so that together they send
at the stated rate whatever the answers (a paced, nearly open loop: a closed loop of N
connections only measures N / throughput, whatever the server does). --flood recommend_cold
makes every request a tower run. The probe keeps going; then the load stops and the probe runs
10 s more.

Reports (exit 1 naming each miss): share of requests shed; shed latency, client side (median,
p99; target < 5 ms); p99 of accepted probe requests against the unloaded p99 (target <= 2x);
sheds in the 10 s after the load (target 0); worker RSS before and after (target: growth <=
--max-rss-growth %, default 10). Also the in-process p99 of accepted requests (histogram
bucket). Sheds decided in the HTTP protocol (service/api/early_shed.py) never reach the app.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import client
import stack
import wrk
from client import Answer, Request

AFTER_S = 10.0
INFLIGHT = 2  # the drill's DUET_MAX_INFLIGHT unless told
FLOOD_NICENESS = 10  # the probe shares a CPU with wrk: wrk yields to it
Catalog = tuple[list[str], list[str]]  # known users; items, most popular first
FLOODS = ("recommend_warm", "recommend_cold", "recommend_filters")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"), help="bundle directory")
    p.add_argument("--url", help="a running service (its RSS is then not measured)")
    p.add_argument(
        "--max-inflight", type=int,
        help=f"DUET_MAX_INFLIGHT (default here {INFLIGHT}: the wait is about limit x service time)",
    )  # fmt: skip
    p.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True,
        help="service on its own CPU, the load generator on the others (default: on)",
    )  # fmt: skip
    p.add_argument("--max-queue-ms", type=int, help="DUET_MAX_QUEUE_MS (default: the service's)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of overload")
    p.add_argument("--multiple", type=float, default=3.0, help="offered load / capacity")
    p.add_argument("--overload-connections", type=int, default=256, help="wrk connections")
    p.add_argument(
        "--flood", default="recommend_warm", choices=FLOODS, help="bench/lua script of the load"
    )
    p.add_argument("--probe-rps", type=float, default=200.0, help="probe requests/s")
    p.add_argument("--unloaded-seconds", type=float, default=10.0, help="unloaded probe length")
    p.add_argument("--max-shed-ms", type=float, default=5.0, help="target: shed p99, client side")
    p.add_argument("--max-p99-ratio", type=float, default=2.0, help="target: accepted/unloaded p99")
    p.add_argument("--max-rss-growth", type=float, default=10.0, help="target: RSS growth, %%")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if min(args.duration, args.probe_rps, args.multiple, args.unloaded_seconds) <= 0:
        p.error("--duration, --probe-rps, --multiple and --unloaded-seconds must be positive")
    if args.overload_connections < 2:
        p.error("--overload-connections must be at least 2")
    if args.url is not None and not args.url.startswith(f"http://{stack.LOOPBACK}:"):
        p.error(f"--url must be http://{stack.LOOPBACK}:<port> (drills stay on loopback)")
    if args.url is not None and (args.max_inflight or args.max_queue_ms):
        p.error("--max-inflight and --max-queue-ms apply to a service this script starts")
    if args.url is None and args.max_inflight is None:
        args.max_inflight = INFLIGHT
    return args


async def _probe(base: str, users: list[str], rps: float, seconds: float) -> list[Answer]:
    rng = random.Random(11)
    out: list[Answer] = []

    def next_request() -> tuple[Request, object]:
        body = {"user_id": rng.choice(users), "k": 10}
        return ("POST", "/v1/recommend", json.dumps(body).encode()), None

    await client.drive(
        base, "probe", next_request, rate_per_s=rps, connections=2,
        until=time.monotonic() + seconds, max_requests=int(rps * seconds * 2) + 10, out=out,
    )  # fmt: skip
    return out


def _latency(answers: list[Answer]) -> dict[str, Any]:
    values = [a.latency_s for a in answers]
    return {
        "count": len(values),
        "p50_ms": client.ms(client.percentile(values, 50)),
        "p99_ms": client.ms(client.percentile(values, 99)),
    }


def _per_shed(
    flood_cpu_s: float | None, per_answer_s: float | None, answered: float, shed: float
) -> float | None:
    if flood_cpu_s is None or per_answer_s is None or not shed:
        return None
    return round((flood_cpu_s - answered * per_answer_s) / shed * 1e6, 1)


def measure(
    args: argparse.Namespace, base: str, pid: int | None, tmp: Path, catalog: Catalog
) -> dict[str, Any]:
    users, items = catalog
    env = stack.wrk_env(tmp, users, items)
    print(f"overload: warming {len(users)} users", flush=True)
    client.run(stack.warm_users(base, users))
    # a closed loop no wider than the in-flight limit: capacity is what the worker serves, not
    # what it serves while also shedding the excess of its own measurement
    connections = min(32, args.max_inflight or 32)
    cpu_before = stack.cpu_seconds(pid) if pid else 0.0
    measured = wrk.run(base, args.flood, threads=1, connections=connections, duration_s=5, env=env)
    served_cpu_s = (stack.cpu_seconds(pid) - cpu_before) / measured.requests if pid else None
    capacity = measured.ok_rps
    print(f"overload: {args.flood} capacity {capacity:,.0f} req/s ({connections} connections, "
          f"{measured.failed} not 2xx)", flush=True)  # fmt: skip
    unloaded = client.run(_probe(base, users, args.probe_rps, args.unloaded_seconds))
    rss_start = stack.rss_mb(pid) if pid else None

    offered = args.multiple * capacity
    pause_ms = args.overload_connections * 1000 / offered  # mean pause per connection
    before = stack.scrape(base)
    cpu_before = stack.cpu_seconds(pid) if pid else 0.0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        flood = pool.submit(
            wrk.run, base, args.flood, threads=1, connections=args.overload_connections,
            duration_s=args.duration, env=env, delay_ms=pause_ms, niceness=FLOOD_NICENESS,
        )  # fmt: skip
        time.sleep(1.0)  # let every wrk connection open before the probe starts
        loaded = client.run(_probe(base, users, args.probe_rps, args.duration - 2.0))
        flooded = flood.result(timeout=args.duration + 60)
    during = stack.scrape(base).minus(before)
    flood_cpu_s = stack.cpu_seconds(pid) - cpu_before if pid else None
    print(
        f"overload: offered {offered:,.0f} req/s, sent {flooded.rps:,.0f} req/s "
        f"({flooded.requests:,} in {flooded.duration_s} s)",
        flush=True,
    )

    after_start = stack.scrape(base)
    calm = client.run(_probe(base, users, args.probe_rps, AFTER_S))
    calm_sheds = stack.scrape(base).minus(after_start).total("duet_shed_total")
    rss_end = stack.rss_mb(pid) if pid else None

    shed = [a for a in loaded if a.status == 503]
    accepted = [a for a in loaded if a.status == 200]
    answered = during.total("duet_http_requests_total", route="/v1/recommend")
    shed_total = during.total("duet_shed_total")
    server_p99 = {
        route: client.ms(during.quantile("duet_http_request_duration_seconds", 0.99, route=route))
        for route in ("shed", "/v1/recommend")
    }
    return {
        "capacity_rps": round(capacity, 1),
        "overload": {
            "flood": args.flood,
            "connections": args.overload_connections,
            "multiple": args.multiple,
            "offered_rps": round(offered, 1),
            "sent_rps": flooded.rps,
            "sent_multiple": round(flooded.rps / capacity, 2),
            "shed_share": round(shed_total / (shed_total + answered), 4) if answered else None,
            "answered": answered,
            "shed": shed_total,
            # the worker's CPU per answer (capacity run) and per refusal (the flood's CPU time
            # less its answers at that cost): what a shed costs the worker
            "cpu_us_per_answer": None if served_cpu_s is None else round(served_cpu_s * 1e6, 1),
            "cpu_us_per_shed": _per_shed(flood_cpu_s, served_cpu_s, answered, shed_total),
            "shed_by_reason": {
                r: during.total("duet_shed_total", reason=r) for r in ("inflight", "queue")
            },
            "shed_with_retry_after": all(a.retry_after == b"1" for a in shed),
            "other_statuses": sorted({a.status for a in loaded} - {200, 503}),
        },
        "unloaded_probe": _latency([a for a in unloaded if a.status == 200]),
        "accepted_probe": _latency(accepted),
        "shed_probe": _latency(shed),
        # in-process time (middleware in to last byte out), as a histogram bucket's upper bound
        "server_p99_ms_bucket": {
            "shed": server_p99["shed"],
            "accepted": server_p99["/v1/recommend"],
        },
        "after_load": {
            "seconds": AFTER_S,
            "probe_503": sum(1 for a in calm if a.status == 503),
            "sheds": calm_sheds,
            "probe_non_2xx": sum(1 for a in calm if a.status != 200),
        },
        "rss_mb": {
            "start": None if rss_start is None else round(rss_start, 1),
            "end": None if rss_end is None else round(rss_end, 1),
        },
    }


def misses(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = []
    over = result["overload"]
    if not over["shed_share"]:
        out.append("nothing was shed: the load did not exceed the in-flight limit")
    if not over["shed_with_retry_after"]:
        out.append("a shed answer had no `Retry-After: 1`")
    if over["other_statuses"]:
        out.append(f"answers other than 200/503 during overload: {over['other_statuses']}")
    shed_p99 = result["shed_probe"]["p99_ms"]
    if shed_p99 is not None and shed_p99 >= args.max_shed_ms:
        out.append(f"shed p99 {shed_p99} ms, client side (target < {args.max_shed_ms} ms)")
    unloaded, accepted = result["unloaded_probe"]["p99_ms"], result["accepted_probe"]["p99_ms"]
    if accepted is None:
        out.append("no probe request was accepted under overload")
    elif unloaded and accepted > args.max_p99_ratio * unloaded:
        out.append(f"accepted p99 {accepted} ms > {args.max_p99_ratio}x unloaded p99 {unloaded} ms")
    after = result["after_load"]
    if after["sheds"] or after["probe_non_2xx"]:
        out.append(
            f"{after['sheds']:.0f} sheds, {after['probe_non_2xx']} probe non-2xx in the "
            f"{AFTER_S:.0f} s after the load (target 0)"
        )
    rss = result["rss_mb"]
    if rss["start"] and rss["end"] > rss["start"] * (1 + args.max_rss_growth / 100):
        out.append(f"RSS {rss['start']} -> {rss['end']} MB (target <= +{args.max_rss_growth}%)")
    return out


def overload(args: argparse.Namespace) -> dict[str, Any]:
    stack.require_tool("wrk", wrk.INSTALL_WRK)
    catalog = stack.users_and_items(args.bundle)  # a bad bundle fails before anything starts
    with tempfile.TemporaryDirectory(prefix="duet-overload-") as tmp_name:
        tmp = Path(tmp_name)
        if args.url is not None:
            return measure(args, args.url.rstrip("/"), None, tmp, catalog)
        limits = {"DUET_MAX_INFLIGHT": args.max_inflight}
        limits["DUET_MAX_QUEUE_MS"] = args.max_queue_ms
        env = {k: str(v) for k, v in limits.items() if v is not None}
        with (
            stack.service_cpu(args.pin) as cpu,
            stack.running_stack(args.bundle, tmp, env) as (_, service, base),
        ):
            if cpu is not None:
                os.sched_setaffinity(service.popen.pid, {cpu})
                print(f"overload: service on CPU {cpu}, the load on the others", flush=True)
            result = measure(args, base, service.popen.pid, tmp, catalog)
            service.check_alive()
            return {**result, "service_cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return stack.run_drill(
        "overload", lambda: overload(args), args.json, lambda result: misses(result, args)
    )


if __name__ == "__main__":
    sys.exit(main())
