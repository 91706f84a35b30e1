"""Redis Cluster failover drill: SIGKILL one master under load while its replica takes over.

    python loadtest/chaos_cluster.py --bundle bundles/demo            (or: make chaos-cluster)

Starts its own local cluster (3 masters + 3 replicas, loadtest/redis_cluster.py, node timeout
1 s) and one service worker in `DUET_REDIS_MODE=cluster` against it; warms every known user;
drives recommend (known users) and events (a new user per event, so each can be looked up
later) at a steady rate; SIGKILLs one master (not the startup node the service was given)
after the warm-up; waits until the cluster is `cluster_state:ok` again with the replica
promoted ("takeover"); keeps the load for --after seconds. /metrics is polled every 100 ms.

Checks (exit 1 naming each miss): 0 non-2xx recommend answers; every event answered 202 is in
its user's history afterwards; the breaker closes within --max-close-s of the takeover (and
stays closed). Events answered 503 while the master's slots were down are counted per phase:
refused, never accepted then lost. --json writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import chaos_redis
import client
import redis
import stack
from client import Answer, Request
from redis_cluster import LocalCluster

POLL_S = 0.1


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"), help="bundle directory")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds of load before the kill")
    p.add_argument("--after", type=float, default=10.0, help="seconds of load after takeover")
    p.add_argument("--recommend-rps", type=float, default=300.0, help="recommend requests/s")
    p.add_argument("--events-rps", type=float, default=50.0, help="events/s (one per request)")
    p.add_argument("--connections", type=int, default=8, help="client connections per kind")
    p.add_argument("--redis-timeout-ms", type=int, default=50, help="DUET_REDIS_TIMEOUT_MS")
    p.add_argument("--max-close-s", type=float, default=5.0, help="target: breaker closed")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    for name in ("warmup", "after", "recommend_rps", "events_rps", "max_close_s"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


async def _load(
    args: argparse.Namespace, base: str, cluster: LocalCluster, *, victim: int,
    catalog: tuple[list[str], list[str]], timeline: chaos_redis.Timeline,
) -> list[Answer]:  # fmt: skip
    rng = random.Random(11)
    users, items = catalog
    run_id = f"cluster-chaos-{int(time.time())}"
    counter = itertools.count()
    out: list[Answer] = []
    done = asyncio.Event()

    def recommend() -> tuple[Request, object]:
        body = {"user_id": rng.choice(users), "k": 10}
        return ("POST", "/v1/recommend", json.dumps(body).encode()), None

    def event() -> tuple[Request, object]:
        user, item = f"{run_id}-{next(counter)}", rng.choice(items[:500])
        body = {"user_id": user, "item_id": item, "type": "click"}
        return ("POST", "/v1/events", json.dumps(body).encode()), (user, item)

    until = time.monotonic() + args.warmup + 60 + args.after  # the failover takes ~2 s
    budget = int((args.recommend_rps + args.events_rps) * (until - time.monotonic())) + 1

    async def drill() -> None:
        await asyncio.sleep(args.warmup)
        timeline.kill = time.monotonic()
        cluster.kill(victim)
        print(f"chaos-cluster: master :{victim} SIGKILLed after {args.warmup:.0f} s", flush=True)
        await asyncio.to_thread(cluster.wait_takeover, victim, 60)
        timeline.restart = time.monotonic()  # the takeover: "restart" in chaos_redis' terms
        print(
            f"chaos-cluster: replica took over {timeline.restart - timeline.kill:.1f} s later",
            flush=True,
        )
        await asyncio.sleep(args.after)
        done.set()

    async def poll() -> None:
        while not done.is_set():
            timeline.samples.append(await asyncio.to_thread(stack.scrape, base, 2.0))
            await asyncio.sleep(POLL_S)

    async def loads() -> None:
        kinds = (("recommend", recommend, args.recommend_rps), ("event", event, args.events_rps))
        tasks = [
            asyncio.create_task(
                client.drive(base, kind, make, rate_per_s=rate, connections=args.connections,
                             until=until, max_requests=budget, out=out)
            )
            for kind, make, rate in kinds
        ]  # fmt: skip
        await done.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    await asyncio.gather(drill(), poll(), loads())
    return out


def _lost(url: str, accepted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    lost: list[tuple[str, str]] = []
    with redis.RedisCluster.from_url(url, socket_timeout=5, socket_connect_timeout=5) as r:
        for start in range(0, len(accepted), 500):
            chunk = accepted[start : start + 500]
            pipe = r.pipeline()
            for user, _ in chunk:
                pipe.lrange(f"duet:{{u:{user}}}:hist", 0, -1)  # service/store/keys.py
            for (user, item), stored in zip(chunk, pipe.execute(), strict=True):
                if item.encode() not in stored:
                    lost.append((user, item))
    return lost


def report(answers: list[Answer], timeline: chaos_redis.Timeline, url: str) -> dict[str, Any]:
    recommend = [a for a in answers if a.kind == "recommend"]
    events = [a for a in answers if a.kind == "event"]
    by_phase: dict[str, dict[str, int]] = {}
    for a in events:
        counts = by_phase.setdefault(chaos_redis._phase(a, timeline), {})
        counts[str(a.status)] = counts.get(str(a.status), 0) + 1
    accepted = [a.tag for a in events if a.status == 202 and isinstance(a.tag, tuple)]
    lost = _lost(url, accepted)
    opened, closed = chaos_redis._breaker(timeline)
    fallbacks = sum(1 for a in recommend if b"store_unavailable" in a.body)
    return {
        "recommend": {
            "requests": len(recommend),
            "non_2xx": sum(1 for a in recommend if not 200 <= a.status < 300),
            "store_unavailable_fallbacks": fallbacks,
            "p99_ms": client.ms(client.percentile([a.latency_s for a in recommend], 99)),
        },
        "events": {
            "by_phase_and_status": by_phase,
            "accepted": len(accepted),
            "lost": len(lost),
            "lost_examples": lost[:5],
        },
        "failover": {"takeover_after_kill_s": round(timeline.restart - timeline.kill, 3)},
        "breaker": {
            "opened_after_kill_s": chaos_redis._round(opened),
            "closed_after_takeover_s": chaos_redis._round(closed),
        },
    }


def misses(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = []
    if result["recommend"]["non_2xx"]:
        out.append(f"{result['recommend']['non_2xx']} recommend answers were not 2xx (target 0)")
    if result["events"]["accepted"] == 0:
        out.append("no event was accepted: the drill checked nothing")
    if result["events"]["lost"]:
        out.append(f"{result['events']['lost']} events answered 202 are lost (target 0)")
    closed = result["breaker"]["closed_after_takeover_s"]
    if closed is None or closed > args.max_close_s:
        out.append(f"breaker closed {closed} s after the takeover (target {args.max_close_s} s)")
    return out


def chaos(args: argparse.Namespace) -> dict[str, Any]:
    users, items = stack.users_and_items(args.bundle)
    with tempfile.TemporaryDirectory(prefix="duet-chaos-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster").start()
        service = None
        try:
            env = {
                "DUET_REDIS_MODE": "cluster",
                "DUET_REDIS_TIMEOUT_MS": str(args.redis_timeout_ms),
            }
            service, base = stack.start_service(args.bundle, cluster.url, Path(tmp), env, 180.0)
            startup = cluster.nodes[0].port
            victim = next(port for port in cluster.master_ports() if port != startup)
            print(f"chaos-cluster: service ready; warming {len(users)} users", flush=True)
            client.run(stack.warm_users(base, users))
            timeline = chaos_redis.Timeline(samples=[])
            answers = client.run(
                _load(args, base, cluster, victim=victim, catalog=(users, items), timeline=timeline)
            )
            service.check_alive()
            result = report(answers, timeline, cluster.url)
        except stack.BenchError as e:
            raise stack.with_service_log(e, service) from e
        finally:
            if service is not None:
                service.stop()
            cluster.stop()
    result["run"] = {
        "warmup_s": args.warmup, "after_s": args.after, "recommend_rps": args.recommend_rps,
        "events_rps": args.events_rps, "redis_timeout_ms": args.redis_timeout_ms,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return stack.run_drill(
        "chaos-cluster", lambda: chaos(args), args.json, lambda result: misses(result, args)
    )


if __name__ == "__main__":
    sys.exit(main())
