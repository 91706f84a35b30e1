"""What the service itself says happened during a scenario: cache results, tower runs,
fallbacks, refused events, read from /metrics before and after. A "warm" run in which every
request ran the user tower, or the Redis breaker opened, is visible in the results."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

# Series the harness follows; label sets are kept as written by the service.
FOLLOWED = re.compile(
    r"^(duet_cache_requests_total|duet_fallbacks_total|duet_events_rejected_total"
    r'|duet_stage_duration_seconds_count(?=\{stage="encode"\})|duet_redis_breaker_open)'
    r"(\{[^}]*\})? (\S+)$",
    re.MULTILINE,
)


def sample(base_url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    values: dict[str, float] = {}
    for name, labels, value in FOLLOWED.findall(text):
        values[f"{name}{labels}"] = values.get(f"{name}{labels}", 0.0) + float(value)
    return values


def delta(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, Any]:
    """Per-scenario counts, and tower runs and cache hits per request."""
    moved = {k: round(v - before.get(k, 0.0), 3) for k, v in after.items() if v != before.get(k)}
    moved.pop("duet_redis_breaker_open", None)
    encodes = moved.get('duet_stage_duration_seconds_count{stage="encode"}', 0.0)
    hits = sum(v for k, v in moved.items() if "cache_requests" in k and 'result="hit"' in k)
    return {
        "counters": moved,
        "encodes_per_request": round(encodes / requests, 3) if requests else 0.0,
        "cache_hits_per_request": round(hits / requests, 3) if requests else 0.0,
        "breaker_open_at_end": bool(after.get("duet_redis_breaker_open", 0.0)),
    }
