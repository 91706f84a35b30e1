"""Recommend throughput against a 3-master Redis Cluster relative to a single Redis node.

    python bench/cluster_ratio.py --bundle bundles/demo            (or: make bench-cluster)

One run, one service worker, same machine: a single redis-server and a local cluster
(loadtest/redis_cluster.py, 3 masters; --replicas 1 adds a replica each, whose replication
then competes for the same cores) side by side; the service is started
against each in turn (single, cluster, single, cluster: alternated, so a shared machine's drift
hits both), every known user warmed, then wrk's `recommend_warm` closed loop for --duration
seconds. Two cases: the default in-process layer (repeat users answered without a round trip)
and `DUET_LOCAL_CACHE_SIZE=0` (every recommend reads Redis). Prints rps per round, the
cluster/single ratio of the means per case and the load average; --json writes it all. Exit 1
when a ratio is under --min-ratio (0.8, the issue's target).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))

import client
import stack
import wrk
from processes import BenchError, start_redis
from redis_cluster import LocalCluster


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"))
    p.add_argument("--duration", type=float, default=8.0, help="seconds of wrk per round")
    p.add_argument("--rounds", type=int, default=2, help="rounds per backend and case")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--min-ratio", type=float, default=0.8)
    p.add_argument(
        "--replicas", type=int, default=0,
        help="replicas per master (0: the 3 masters alone, like the single node has none)",
    )  # fmt: skip
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def _round(bundle: Path, tmp: Path, url: str, env: dict[str, str], args: Any) -> float:
    service, base = stack.start_service(bundle, url, tmp, env, 180.0)
    try:
        users, _ = stack.users_and_items(bundle)
        client.run(stack.warm_users(base, users))
        files = {"DUET_BENCH_USERS": str(tmp / "users.txt")}
        result = wrk.run(
            base, "recommend_warm", threads=1, connections=args.connections,
            duration_s=args.duration, env=files,
        )  # fmt: skip
        service.check_alive()
        if result.failed:
            raise BenchError(f"{result.failed} recommends failed against {url}")
        return round(result.ok_rps, 1)
    finally:
        service.stop()


def bench(args: argparse.Namespace) -> dict[str, Any]:
    users, _ = stack.users_and_items(args.bundle)
    with tempfile.TemporaryDirectory(prefix="duet-cluster-ratio-") as name:
        tmp = Path(name)
        (tmp / "users.txt").write_text("\n".join(users) + "\n", encoding="utf-8")
        single, single_url = start_redis(tmp)
        cluster = LocalCluster(tmp / "cluster", replicas=args.replicas).start()
        cases: dict[str, Any] = {}
        try:
            for case, extra in (
                ("local_layer", {}),
                ("no_local_layer", {"DUET_LOCAL_CACHE_SIZE": "0"}),
            ):
                rps: dict[str, list[float]] = {"single": [], "cluster": []}
                for _ in range(args.rounds):
                    rps["single"].append(_round(args.bundle, tmp, single_url, extra, args))
                    cluster_env = {**extra, "DUET_REDIS_MODE": "cluster"}
                    rps["cluster"].append(_round(args.bundle, tmp, cluster.url, cluster_env, args))
                    print(f"bench-cluster: {case}: {rps}", flush=True)
                mean = {k: sum(v) / len(v) for k, v in rps.items()}
                cases[case] = {"rps": rps, "ratio": round(mean["cluster"] / mean["single"], 3)}
        finally:
            cluster.stop()
            single.stop()
    return {
        "cases": cases,
        "run": {"duration_s": args.duration, "rounds": args.rounds, "workers": 1,
                "connections": args.connections, "replicas": args.replicas,
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)

    def misses(result: dict[str, Any]) -> list[str]:
        return [
            f"{case}: cluster/single {c['ratio']} < {args.min_ratio}"
            for case, c in result["cases"].items()
            if c["ratio"] < args.min_ratio
        ]

    return stack.run_drill("bench-cluster", lambda: bench(args), args.json, misses)


if __name__ == "__main__":
    sys.exit(main())
