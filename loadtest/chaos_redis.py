"""Redis chaos drill: kill redis-server under steady load, keep the load, restart it, check.

    python loadtest/chaos_redis.py --bundle bundles/demo            (or: make chaos)

Starts its own redis-server (append-only file, fsync on every write, so what Redis acknowledged
survives a SIGKILL) and one service worker against it; warms every known user's cache; drives
recommend (known users) and events (a new user per event, so each can be looked up later) at a
steady rate; SIGKILLs redis-server after the warm-up, keeps the load through the outage,
restarts it on the same port and keeps the load until the cache hit ratio is back. Meanwhile
/metrics is polled every 100 ms for the breaker gauge and the cache counters.

Checks (exit 1 naming each miss): 0 non-2xx recommend answers; every event answered 202 is in
its user's history in Redis afterwards; the breaker opened within --max-open-s of the kill and
closed after the restart; the cache hit ratio (1-s windows) back to 90% of its pre-kill level
within --max-recovery-s. --json writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import client
import redis
import stack
from client import Answer, Request

POLL_S = 0.1
Catalog = tuple[list[str], list[str]]  # known users; items, most popular first


@dataclass
class Timeline:
    """What the drill did when, and what /metrics said every POLL_S."""

    samples: list[stack.Sample]
    kill: float = 0.0
    restart: float = 0.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"), help="bundle directory")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the kill")
    p.add_argument("--outage", type=float, default=15.0, help="seconds redis-server stays down")
    p.add_argument("--recovery", type=float, default=60.0, help="max seconds of load after restart")
    p.add_argument("--recommend-rps", type=float, default=300.0, help="recommend requests/s")
    p.add_argument("--events-rps", type=float, default=50.0, help="events/s (one per request)")
    p.add_argument("--connections", type=int, default=8, help="client connections per kind")
    p.add_argument("--redis-timeout-ms", type=int, default=50, help="DUET_REDIS_TIMEOUT_MS")
    p.add_argument("--max-open-s", type=float, default=1.0, help="target: breaker open after kill")
    p.add_argument("--max-recovery-s", type=float, default=60.0, help="target: hit ratio back")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for ready")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    for name in ("warmup", "outage", "recovery", "recommend_rps", "events_rps", "max_open_s"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.connections < 1:
        p.error("--connections must be at least 1")
    return args


async def _load(
    args: argparse.Namespace, base: str, server: stack.RedisProcess, catalog: Catalog,
    timeline: Timeline,
) -> list[Answer]:  # fmt: skip
    """Recommend and events at a steady rate through warm-up, kill, outage, restart, recovery."""
    rng = random.Random(7)
    users, items = catalog
    run_id = f"chaos-{int(time.time())}"
    counter = itertools.count()
    out: list[Answer] = []
    recovered = asyncio.Event()

    def recommend() -> tuple[Request, object]:
        body = {"user_id": rng.choice(users), "k": 10}
        return ("POST", "/v1/recommend", json.dumps(body).encode()), None

    def event() -> tuple[Request, object]:
        user, item = f"{run_id}-{next(counter)}", rng.choice(items[:500])
        body = {"user_id": user, "item_id": item, "type": "click"}
        return ("POST", "/v1/events", json.dumps(body).encode()), (user, item)

    start = time.monotonic()
    until = start + args.warmup + args.outage + args.recovery
    budget = int((args.recommend_rps + args.events_rps) * (until - start)) + 1

    async def drills() -> None:
        await asyncio.sleep(args.warmup)
        timeline.kill = time.monotonic()
        server.kill()
        print(f"chaos: redis-server killed after {args.warmup:.0f} s of load", flush=True)
        await asyncio.sleep(args.outage)
        timeline.restart = time.monotonic()
        await asyncio.to_thread(server.start)
        print(f"chaos: redis-server restarted after {args.outage:.0f} s down", flush=True)
        await recovered.wait()

    async def poll() -> None:
        while time.monotonic() < until:
            sample = await asyncio.to_thread(stack.scrape, base, 2.0)
            timeline.samples.append(sample)
            if timeline.restart and _recovered_at(timeline) is not None:
                await asyncio.sleep(2.0)  # a little more load past the recovery, then stop
                recovered.set()
                return
            await asyncio.sleep(POLL_S)
        recovered.set()

    async def loads() -> None:
        kinds = (
            ("recommend", recommend, args.recommend_rps),
            ("event", event, args.events_rps),
        )
        tasks = [
            asyncio.create_task(
                client.drive(base, kind, make, rate_per_s=rate, connections=args.connections,
                             until=until, max_requests=budget, out=out)
            )
            for kind, make, rate in kinds
        ]  # fmt: skip
        await recovered.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    await asyncio.gather(drills(), poll(), loads())
    return out


def _hit_ratio(a: stack.Sample, b: stack.Sample) -> float | None:
    moved = b.minus(a)
    hits = moved.total("duet_cache_requests_total", result="hit")
    total = moved.total("duet_cache_requests_total")
    return hits / total if total > 0 else None


def _windows(timeline: Timeline, since: float, until: float) -> list[tuple[float, float]]:
    """(end time, hit ratio) over consecutive ~1 s windows between two instants."""
    samples = [s for s in timeline.samples if since <= s.at <= until]
    out: list[tuple[float, float]] = []
    anchor = samples[0] if samples else None
    for s in samples[1:]:
        if anchor is not None and s.at - anchor.at >= 1.0:
            ratio = _hit_ratio(anchor, s)
            if ratio is not None:
                out.append((s.at, ratio))
            anchor = s
    return out


def _baseline(timeline: Timeline) -> float | None:
    before = _windows(timeline, timeline.kill - 4.0, timeline.kill)
    return sum(r for _, r in before) / len(before) if before else None


def _recovered_at(timeline: Timeline) -> float | None:
    baseline = _baseline(timeline)
    if baseline is None:
        return None
    for end, ratio in _windows(timeline, timeline.restart, float("inf")):
        if ratio >= 0.9 * baseline:
            return end
    return None


def _breaker(timeline: Timeline) -> tuple[float | None, float | None]:
    """Seconds from the kill to the gauge first at 1, and from the restart to it staying 0."""
    opened = next(
        (s.at - timeline.kill for s in timeline.samples
         if s.at >= timeline.kill and s.total("duet_redis_breaker_open") >= 1),
        None,
    )  # fmt: skip
    closed = None
    for s in reversed([s for s in timeline.samples if s.at >= timeline.restart]):
        if s.total("duet_redis_breaker_open") >= 1:
            break
        closed = s.at - timeline.restart
    return opened, closed


def _lost_events(port: int, accepted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    lost: list[tuple[str, str]] = []
    with redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5) as r:
        for start in range(0, len(accepted), 500):
            chunk = accepted[start : start + 500]
            pipe = r.pipeline(transaction=False)
            for user, _ in chunk:
                pipe.lrange(f"duet:{{u:{user}}}:hist", 0, -1)  # service/store/keys.py
            for (user, item), stored in zip(chunk, pipe.execute(), strict=True):
                if item.encode() not in stored:
                    lost.append((user, item))
    return lost


def _phase(answer: Answer, timeline: Timeline) -> str:
    done = answer.sent + answer.latency_s
    if done < timeline.kill:
        return "before"
    return "outage" if done < timeline.restart else "after"


def report(answers: list[Answer], timeline: Timeline, redis_port: int) -> dict[str, Any]:
    recommend = [a for a in answers if a.kind == "recommend"]
    events = [a for a in answers if a.kind == "event"]
    by_phase: dict[str, dict[str, int]] = {}
    for a in events:
        counts = by_phase.setdefault(_phase(a, timeline), {})
        counts[str(a.status)] = counts.get(str(a.status), 0) + 1
    accepted = [a.tag for a in events if a.status == 202 and isinstance(a.tag, tuple)]
    lost = _lost_events(redis_port, accepted)
    opened, closed = _breaker(timeline)
    recovered = _recovered_at(timeline)
    fallback_outage = sum(
        1 for a in recommend if _phase(a, timeline) == "outage" and b"store_unavailable" in a.body
    )
    return {
        "recommend": {
            "requests": len(recommend),
            "non_2xx": sum(1 for a in recommend if not 200 <= a.status < 300),
            "fallback_during_outage": fallback_outage,
            "p99_ms_outage": client.ms(
                client.percentile(
                    [a.latency_s for a in recommend if _phase(a, timeline) == "outage"], 99
                )
            ),
        },
        "events": {
            "by_phase_and_status": by_phase,
            "accepted": len(accepted),
            "lost": len(lost),
            "lost_examples": lost[:5],
        },
        "breaker": {
            "opened_after_kill_s": _round(opened),
            "closed_after_restart_s": _round(closed),
        },
        "cache_hit_ratio": {
            "before_kill": _round(_baseline(timeline)),
            "recovered_after_restart_s": _round(
                None if recovered is None else recovered - timeline.restart
            ),
        },
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def misses(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = []
    if result["recommend"]["non_2xx"]:
        out.append(f"{result['recommend']['non_2xx']} recommend answers were not 2xx (target 0)")
    if result["events"]["accepted"] == 0:
        out.append("no event was accepted: the drill checked nothing")
    if result["events"]["lost"]:
        out.append(f"{result['events']['lost']} events answered 202 are not in Redis (target 0)")
    opened = result["breaker"]["opened_after_kill_s"]
    if opened is None or opened > args.max_open_s:
        out.append(f"breaker opened after {opened} s of outage (target < {args.max_open_s} s)")
    if result["breaker"]["closed_after_restart_s"] is None:
        out.append("breaker did not close after redis-server came back")
    recovered = result["cache_hit_ratio"]["recovered_after_restart_s"]
    if recovered is None or recovered > args.max_recovery_s:
        out.append(f"hit ratio recovered after {recovered} s (target {args.max_recovery_s} s)")
    return out


def chaos(args: argparse.Namespace) -> dict[str, Any]:
    users, items = stack.users_and_items(args.bundle)
    with tempfile.TemporaryDirectory(prefix="duet-chaos-") as tmp:
        env = {"DUET_REDIS_TIMEOUT_MS": str(args.redis_timeout_ms)}
        running = stack.running_stack(
            args.bundle, Path(tmp), env, redis_data_dir=Path(tmp) / "redis"
        )
        with running as (server, service, base):
            print(f"chaos: service ready; warming {len(users)} users", flush=True)
            client.run(stack.warm_users(base, users))
            timeline = Timeline(samples=[])
            answers = client.run(_load(args, base, server, (users, items), timeline))
            service.check_alive()
            result = report(answers, timeline, server.port)
    result["run"] = {
        "warmup_s": args.warmup, "outage_s": args.outage, "recommend_rps": args.recommend_rps,
        "events_rps": args.events_rps, "redis_timeout_ms": args.redis_timeout_ms,
    }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return stack.run_drill(
        "chaos", lambda: chaos(args), args.json, lambda result: misses(result, args)
    )


if __name__ == "__main__":
    sys.exit(main())
