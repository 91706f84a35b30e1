"""Cache-miss path against cache-hit path of a recommend, in process, against a real Redis.

    python bench/miss_path.py --bundle bundles/demo [--rounds 3000]   (or: make bench-miss)

Both paths make the same single Redis round trip (history + cached embedding; the in-process
layer is off) and the same FAISS search (the page memo is off); the miss path also runs the
ONNX user tower and schedules the embedding write. Rounds alternate hit and miss for random
known users, so drift on a shared machine hits both alike. Prints both medians and their
difference; exits non-zero when the difference exceeds --max-diff-us (issue target: 100 us).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from processes import BenchError, start_redis

from service.arms import Arm
from service.catalog.bundle import load_bundle
from service.catalog.columns import read_strings
from service.lifecycle import settle_heap
from service.pages import PageMemo
from service.recommender import Recommender, RecommendQuery
from service.settings import Settings
from service.store import keys, open_store


async def measure(bundle_dir: Path, redis_url: str, rounds: int) -> dict[str, float]:
    bundle = load_bundle(bundle_dir)
    arm = Arm("bench", bundle, pages=PageMemo(0))
    store = open_store(Settings(redis_url=redis_url, local_cache_size=0, redis_timeout_ms=1000))
    recommender = Recommender(store)
    users = read_strings(bundle_dir, "user_ids")
    admin = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    settle_heap()
    timings: dict[str, list[float]] = {"hit": [], "miss": []}
    try:
        for user in users:  # every user's embedding cached once
            await recommender.recommend(arm, RecommendQuery(user), "warm")
        await recommender.drain()
        for index in range(rounds):
            user = random.choice(users)  # noqa: S311 (benchmark sampling, not security)
            path = "miss" if index % 2 else "hit"
            if path == "miss":
                await admin.delete(keys.emb(bundle.version, user))
            started = time.perf_counter()
            await recommender.recommend(arm, RecommendQuery(user), "bench")
            timings[path].append(time.perf_counter() - started)
            await recommender.drain()  # the background write lands outside the timed part
    finally:
        await admin.aclose()
        await store.close()
    hit, miss = (statistics.median(timings[p]) * 1e6 for p in ("hit", "miss"))
    return {"hit_median_us": hit, "miss_median_us": miss, "difference_us": miss - hit}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--max-diff-us", type=float, default=100.0)
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").is_file():
        print(f"miss-path: no bundle at {args.bundle} (make demo builds one)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="duet-miss-") as tmp:
        try:
            redis, url = start_redis(Path(tmp))
        except BenchError as error:
            print(f"miss-path: {error}", file=sys.stderr)
            return 2
        try:
            result = asyncio.run(measure(args.bundle, url, args.rounds))
        finally:
            redis.stop()
    print(
        f"miss-path: {args.rounds} rounds; hit median {result['hit_median_us']:.0f} us, "
        f"miss median {result['miss_median_us']:.0f} us, "
        f"difference {result['difference_us']:.0f} us (target <= {args.max_diff_us:.0f} us)"
    )
    return 0 if result["difference_us"] <= args.max_diff_us else 1


if __name__ == "__main__":
    sys.exit(main())
