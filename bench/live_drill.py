"""Issue 12's consistency targets, measured: two workers, a real Redis, a recommend load.

    python bench/live_drill.py --bundle bundles/demo        (or: make live-drill)

Starts its own redis-server and `python -m service` with DUET_WORKERS=2 on loopback, and keeps
a recommend load on it for the whole drill (`--load-threads` keep-alive clients, stopped with
the drill and bounded by `--max-seconds`). Then:

- **upsert to retrievable**: `--upserts` times, post a new item and probe at once with
  `--probes` parallel `POST /v1/retrieve` by the item's own embedding, each on a fresh
  connection (the kernel spreads them over both workers), until one whole batch has the item
  first. The time from sending the upsert to that batch's end, p50/p99; and how often the first
  batch after the 2xx already had it everywhere (the promise: always).
- **delete to never served**: `--deletes` of the items just posted, each then probed by its own
  embedding (it would come first if it were still served) over `--delete-requests` requests in
  all; appearances of a deleted id after its DELETE returned 2xx must be 0.

Both workers must have answered (their Prometheus multiprocess files say so), or the run fails.
Prints one JSON object; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from live_phase import genre_vocab
from processes import LOOPBACK, BenchError, free_port, start, start_redis, wait_http

from service.catalog.bundle import load_bundle
from service.catalog.columns import read_strings
from service.catalog.live import LiveItem

TOKEN = "duet-drill-admin-token-0123456789"  # noqa: S105 (throwaway loopback service)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPSERT_P99_S = 1.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path("bundles/demo"))
    p.add_argument("--upserts", type=int, default=100)
    p.add_argument("--deletes", type=int, default=20)
    p.add_argument("--delete-requests", type=int, default=10_000)
    p.add_argument("--probes", type=int, default=8, help="parallel fresh-connection probes")
    p.add_argument("--load-threads", type=int, default=4, help="recommend load clients")
    p.add_argument("--max-seconds", type=float, default=600, help="bound on the whole drill")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def _worker_pids(metrics_dir: Path) -> set[str]:
    return {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}


class Prober:
    """Retrieve-by-embedding on fresh connections: which probes put `item_id` first."""

    def __init__(self, base: str, parallel: int) -> None:
        self._client = httpx.Client(
            base_url=base, timeout=5, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._pool = ThreadPoolExecutor(max_workers=parallel)
        self.parallel = parallel
        self.requests = 0
        self.failed = 0

    def _first(self, vector: list[float]) -> str | None:
        response = self._client.post("/v1/retrieve", json={"embedding": vector, "k": 5})
        self.requests += 1
        if response.status_code != 200:
            self.failed += 1
            return None
        items = response.json()["items"]
        return str(items[0]["item_id"]) if items else None

    def batch(self, vector: list[float], count: int | None = None) -> list[str | None]:
        return list(self._pool.map(self._first, [vector] * (count or self.parallel)))

    def close(self) -> None:
        self._pool.shutdown()
        self._client.close()


class Load:
    """Recommends for known users from `threads` keep-alive clients until stopped."""

    def __init__(self, base: str, users: list[str], threads: int, max_s: float) -> None:
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_s
        self.requests = self.failed = 0
        self._threads = [
            threading.Thread(target=self._run, args=(base, users[n::threads]), daemon=True)
            for n in range(threads)
        ]

    def _run(self, base: str, users: list[str]) -> None:
        with httpx.Client(base_url=base, timeout=5) as client:
            n = 0
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                user = users[n % len(users)]
                n += 1
                try:
                    ok = client.post("/v1/recommend", json={"user_id": user, "k": 10}).is_success
                except httpx.HTTPError:
                    ok = False
                self.requests += 1
                self.failed += not ok

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.seconds = time.monotonic() - self._started


def _upserts(
    client: httpx.Client, prober: Prober, items: list[LiveItem], vectors: list[list[float]]
) -> dict[str, Any]:
    latencies, first_batch = [], 0
    for item, vector in zip(items, vectors, strict=True):
        body = {"item_id": item.item_id, "title": item.title, "genres": list(item.genres)}
        started = time.monotonic()
        response = client.post("/admin/items", json={**body, "year": item.year}, headers=AUTH)
        if response.status_code != 200:
            raise BenchError(f"upsert answered {response.status_code}: {response.text[:200]}")
        tries = 0
        while True:
            tries += 1
            if all(first == item.item_id for first in prober.batch(vector)):
                break
            if time.monotonic() - started > 10:
                raise BenchError(f"{item.item_id} was not retrievable everywhere after 10 s")
        latencies.append(time.monotonic() - started)
        first_batch += tries == 1
    ordered = sorted(latencies)
    return {
        "count": len(items),
        "p50_s": round(statistics.median(ordered), 4),
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4),
        "max_s": round(ordered[-1], 4),
        "seen_by_the_first_batch_after_2xx": first_batch,
    }


def _deletes(
    client: httpx.Client,
    prober: Prober,
    items: list[LiveItem],
    vectors: list[list[float]],
    total: int,
) -> dict[str, Any]:
    per_item = max(prober.parallel, total // max(1, len(items)))
    appearances = probes = 0
    for item, vector in zip(items, vectors, strict=True):
        response = client.delete(f"/admin/items/{item.item_id}", headers=AUTH)
        if response.status_code != 200:
            raise BenchError(f"delete answered {response.status_code}: {response.text[:200]}")
        firsts = prober.batch(vector, per_item)
        probes += len(firsts)
        appearances += sum(first == item.item_id for first in firsts)
    return {"count": len(items), "requests_after_2xx": probes, "appearances": appearances}


def drill(args: argparse.Namespace) -> dict[str, Any]:
    bundle = load_bundle(args.bundle)
    vocab = genre_vocab(args.bundle)
    items = [
        LiveItem(f"drill-{n}", f"Drill film {n} (2031)", (vocab[n % len(vocab)],), 2031)
        for n in range(args.upserts)
    ]
    vectors = [[float(x) for x in v] for v in bundle.items.embed(items)]
    with tempfile.TemporaryDirectory(prefix="duet-drill-") as tmp_dir:
        tmp = Path(tmp_dir)
        redis, redis_url = start_redis(tmp)
        metrics_dir = tmp / "prometheus"
        metrics_dir.mkdir()
        port = free_port()
        env = {
            "DUET_BUNDLE": str(args.bundle.resolve()),
            "DUET_REDIS_URL": redis_url,
            "DUET_HOST": LOOPBACK,
            "DUET_PORT": str(port),
            "DUET_WORKERS": "2",
            "DUET_ADMIN_TOKEN": TOKEN,
            "DUET_LOG_LEVEL": "warning",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        service = start("service", [sys.executable, "-m", "service"], tmp, env=env)
        base = f"http://{LOOPBACK}:{port}"
        users = read_strings(args.bundle, "user_ids")
        try:
            wait_http(service, base + "/readyz", 120)
            prober = Prober(base, args.probes)
            with (
                Load(base, users, args.load_threads, args.max_seconds) as load,
                httpx.Client(base_url=base, timeout=10) as client,
            ):
                upserts = _upserts(client, prober, items, vectors)
                deletes = _deletes(
                    client, prober, items[: args.deletes], vectors[: args.deletes],
                    args.delete_requests,
                )  # fmt: skip
            prober.close()
            workers = len(_worker_pids(metrics_dir))
        finally:
            service.stop()
            redis.stop()
    return {
        "bundle": bundle.version,
        "workers_answering": workers,
        "upsert_to_retrievable": upserts,
        "delete_to_never_served": deletes,
        "probe_requests": prober.requests,
        "probe_failures": prober.failed,
        "recommend_load": {
            "requests": load.requests,
            "rps": round(load.requests / load.seconds, 1),
            "failed": load.failed,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        result = drill(args)
    except BenchError as e:
        print(f"duet-drill: FAILED: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    missed = [
        name
        for name, bad in (
            ("both workers answered", result["workers_answering"] < 2),
            ("upsert p99 <= 1 s", result["upsert_to_retrievable"]["p99_s"] > UPSERT_P99_S),
            ("0 appearances after DELETE", result["delete_to_never_served"]["appearances"] > 0),
            ("no failed probe", result["probe_failures"] > 0),
            ("no failed recommend", result["recommend_load"]["failed"] > 0),
        )
        if bad
    ]
    for name in missed:
        print(f"duet-drill: MISSED: {name}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
