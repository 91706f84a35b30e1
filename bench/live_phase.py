"""Throughput with a live catalog on top of the bundle, against the same scenarios without it.

`bench/run.py --live-items N` posts N content-only items through `POST /admin/items` (lists of
1,000, as an operator would) after the ordinary scenarios, warms the users again, and re-runs
the scenarios that search (`LIVE_SCENARIOS`) on the same service. The ratio to each one's
run without live items, in the same run, is issue 12's target (≥ 0.9).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

LIVE_SCENARIOS = ("recommend_warm", "recommend_search", "retrieve", "similar")
_BATCH = 1_000


def live_items(count: int, genres: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "item_id": f"bench-live-{n}",
            "title": f"Live film {n} ({2020 + n % 10})",
            "genres": [genres[n % len(genres)], genres[(n * 7 + 3) % len(genres)]],
            "year": 2020 + n % 10,
        }
        for n in range(count)
    ]


def post_items(base: str, token: str, items: list[dict[str, Any]]) -> float:
    """Seconds to post `items`; raises on any non-2xx (urllib's HTTPError)."""
    started = time.monotonic()
    for at in range(0, len(items), _BATCH):
        request = urllib.request.Request(  # noqa: S310 (loopback http built by the harness)
            base + "/admin/items",
            data=json.dumps(items[at : at + _BATCH]).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            response.read()
    return time.monotonic() - started


def genre_vocab(bundle: Path) -> list[str]:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    return list(manifest["item_tower"]["genre_vocab"]) or ["Drama"]


def measure(
    *,
    count: int,
    base: str,
    token: str,
    bundle: Path,
    without: dict[str, dict[str, Any]],
    run_scenario: Callable[[str], dict[str, Any]],
    rewarm: Callable[[], None],
) -> dict[str, Any]:
    """Post `count` items, then each LIVE_SCENARIOS entry measured in `without` again."""
    posted_s = post_items(base, token, live_items(count, genre_vocab(bundle)))
    print(f"duet-bench: posted {count:,} live items in {posted_s:.1f} s", flush=True)
    rewarm()
    scenarios: dict[str, dict[str, Any]] = {}
    for name in (s for s in LIVE_SCENARIOS if s in without):
        result = run_scenario(name)
        result["vs_without"] = round(result["rps"] / without[name]["rps"], 3)
        scenarios[name] = result
        print(
            f"duet-bench: {name:18s} with {count:,} live items {result['rps']:9,.0f} req/s "
            f"({result['vs_without']:.2f}x without)",
            flush=True,
        )
    return {"count": count, "post_s": round(posted_s, 2), "scenarios": scenarios}
