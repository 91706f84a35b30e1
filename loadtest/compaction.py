"""Compaction drill: fold a live catalog into a new bundle and reload to it under load.

    python loadtest/compaction.py --bundle bundles/demo                 (or: make compaction)

Starts redis-server and one service worker on loopback free ports (loadtest/stack.py), posts
--live new items through the admin API, then keeps a bounded load running (recommends for
known users and item reads, --rps over --connections, at most --max-requests, for the whole
drill) while it:
1. runs `python -m models compact` (a subprocess, timed) into a temporary directory, and
   meanwhile, and after it, makes --late more changes against the served bundle (upserts of new
   items, deletes of folded ones): changes past the compaction's recorded position;
2. reloads to the compacted bundle (`POST /admin/bundles/reload`, timed);
3. checks every late change holds after the reload (a late-deleted item 404s, a late upsert is
   served live, a folded item comes from the bundle) and that the served delta holds only the
   late changes.
Reports failed requests (any answer but 200 or 404 to the item reads of deleted items),
latencies, compaction and reload times; exit 1 naming each miss (any failed request, any lost
change), 2 when the drill could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import client
import httpx
import stack
from client import Answer, Request

BATCH = 1_000
ADMIN_TIMEOUT_S = 120.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--live", type=int, default=5_000, help="items posted before compacting")
    parser.add_argument("--late", type=int, default=200, help="changes after the position")
    parser.add_argument("--rps", type=float, default=150.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the load's bound")
    parser.add_argument("--after-s", type=float, default=5.0, help="load after the reload")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def _item(i: int, tag: str) -> dict[str, Any]:
    genres = [("Drama", "Comedy", "Action", "Thriller", "Romance")[i % 5]]
    return {"item_id": f"{tag}-{i}", "title": f"Drill Film {tag} {i} (2031)", "genres": genres,
            "year": 2031, "attributes": {"batch": tag}}  # fmt: skip


async def _admin(http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    response = await http.request(method, path, timeout=ADMIN_TIMEOUT_S, **kw)
    if response.status_code >= 500 or response.status_code in (401, 422):
        raise stack.BenchError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response


async def _post_items(http: httpx.AsyncClient, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), BATCH):
        await _admin(http, "POST", "/admin/items", json=items[start : start + BATCH])


async def _late_changes(http: httpx.AsyncClient, count: int, done: asyncio.Event) -> list[str]:
    """Half during the compaction, half once it ended: upserts of new items and deletes of
    folded ones alternate. Returns the ids deleted."""
    deleted = []
    for i in range(count):
        if i == count // 2:
            await done.wait()
        if i % 2:
            deleted.append(f"live-{i}")
            await _admin(http, "DELETE", f"/admin/items/live-{i}")
        else:
            await _admin(http, "POST", "/admin/items", json=_item(i, "late"))
        await asyncio.sleep(0.01)
    return deleted


async def _compact(bundle: Path, redis_url: str, out: Path) -> tuple[float, str]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "models", "compact", "--bundle", str(bundle),
        "--redis-url", redis_url, "--out", str(out), "--no-progress",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(600):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise stack.BenchError("compaction took more than 600 s") from None
    if process.returncode != 0:
        raise stack.BenchError(f"compaction failed: {stderr.decode()[-2000:]}")
    return time.perf_counter() - started, stdout.decode().strip()


def _requests(users: list[str], live: int) -> Any:
    """Recommends (known users) and item reads (folded live items), alternating."""
    counter = itertools.count()

    def next_request() -> tuple[Request, object]:
        n = next(counter)
        if n % 2:
            return ("GET", f"/v1/items/live-{(n * 7) % live}", None), "item"
        body = json.dumps({"user_id": users[n % len(users)], "k": 10}).encode()
        return ("POST", "/v1/recommend", body), "recommend"

    return next_request


def _failed(answers: list[Answer]) -> list[Answer]:
    """An item read may 404 (a late change deleted it); anything else but 200 failed."""
    return [a for a in answers if a.status != 200 and not (a.tag == "item" and a.status == 404)]


async def _drill(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    env = {"DUET_ADMIN_TOKEN": token, "DUET_REDIS_TIMEOUT_MS": "200"}
    with stack.running_stack(args.bundle, tmp, env) as (redis, _, base):
        users, _items = stack.users_and_items(args.bundle)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            started = time.perf_counter()
            await _post_items(http, [_item(i, "live") for i in range(args.live)])
            posted_s = time.perf_counter() - started
            answers: list[Answer] = []
            load_task = asyncio.create_task(
                client.drive(
                    base, "drill", _requests(users, args.live), rate_per_s=args.rps,
                    connections=args.connections, until=time.monotonic() + args.max_seconds,
                    max_requests=args.max_requests, out=answers, timeout_s=10.0,
                )
            )  # fmt: skip
            await asyncio.sleep(1.0)
            compacted = tmp / "compacted"
            done = asyncio.Event()
            late = asyncio.create_task(_late_changes(http, args.late, done))
            compaction_s, summary = await _compact(args.bundle, redis.url, compacted)
            done.set()
            deleted = await late
            reload_started = time.monotonic()
            target = {"bundle": str(compacted)}
            reload = await _admin(http, "POST", "/admin/bundles/reload", json=target)
            reload_s = time.monotonic() - reload_started
            reload_ended = time.monotonic()
            await asyncio.sleep(args.after_s)
            load_task.cancel()  # the load stops here (or at its bounds, whichever comes first)
            await asyncio.gather(load_task, return_exceptions=True)

            manifest = json.loads((compacted / "manifest.json").read_text())
            origin = manifest["compacted_from"]
            lost = []
            for item_id in deleted:
                if (await http.get(f"/v1/items/{item_id}")).status_code != 404:
                    lost.append(f"{item_id} deleted late but still served")
            for i in range(0, args.late, 2):
                held = await http.get(f"/admin/items/late-{i}")
                if held.status_code != 200:
                    lost.append(f"late-{i} upserted late but not served")
            folded = (await http.get("/admin/items/live-0")).json()
            if folded.get("source") != "bundle":
                lost.append(f"live-0 is not served from the compacted bundle: {folded}")
            served = reload.json()["arms"][0]["bundle_version"]

    failed = _failed(answers)
    during = [a for a in answers if reload_started <= a.sent <= reload_ended]
    latencies = [a.latency_s for a in answers if a.status == 200]
    return {
        "bundle": str(args.bundle),
        "live_items": args.live,
        "post_live_s": round(posted_s, 2),
        "compaction_s": round(compaction_s, 2),
        "compaction_output": summary,
        "changes_folded": origin["changes_folded"],
        "late_changes": args.late,
        "late_after_position": args.late - (origin["catalog_version"] - args.live),
        "reload_s": round(reload_s, 2),
        "reload_server_s": reload.json()["seconds"],
        "served_after": served,
        "compacted_num_items": manifest["num_items"],
        "requests": len(answers),
        "requests_during_reload": len(during),
        "failed_requests": len(failed),
        "failed_statuses": sorted({a.status for a in failed}),
        "p50_ms": client.ms(client.percentile(latencies, 50)),
        "p99_ms": client.ms(client.percentile(latencies, 99)),
        "max_during_reload_ms": client.ms(max((a.latency_s for a in during), default=None)),
        "lost_changes": lost,
    }


def _misses(result: dict[str, Any]) -> list[str]:
    missed = []
    if result["failed_requests"]:
        missed.append(f"{result['failed_requests']} failed requests {result['failed_statuses']}")
    missed += result["lost_changes"]
    return missed


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    with tempfile.TemporaryDirectory(prefix="duet-compaction-") as tmp:
        return stack.run_drill(
            "compaction", lambda: asyncio.run(_drill(args, Path(tmp))), args.json, _misses
        )


if __name__ == "__main__":
    sys.exit(main())
