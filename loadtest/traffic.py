"""Recommendation traffic that looks like production: who asks, how often, and with what.

Real traffic is skewed: a few users come back all the time (Zipf over the bundle's users), a
share of requests comes from people the model has never seen (new ids, some with a session
history), items are requested and clicked in popularity order, and clicks follow the
recommendations that were shown (so an experiment's report has something to attribute).
Kept apart from the Locust file so that the load shape is plain, seeded and testable.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.catalog.columns import read_strings

JsonBody = dict[str, Any]

EVENT_TYPES = ("view", "click", "rating", "purchase")
EVENT_WEIGHTS = (0.50, 0.35, 0.10, 0.05)


def _rated(event: JsonBody, rng: random.Random) -> JsonBody:
    """A rating event carries its value on the 0.5-5 scale (the service refuses one without)."""
    if event["type"] == "rating":
        event["value"] = rng.choice((1.0, 2.5, 3.5, 4.0, 5.0))
    return event


class CatalogError(RuntimeError):
    """The bundle the traffic is drawn from is missing or unreadable."""


@dataclass(frozen=True)
class Catalog:
    """What the traffic is drawn from: a bundle's users and items, most popular items first."""

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    genres: tuple[str, ...]
    year_min: int
    year_max: int
    embedding_dim: int


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise CatalogError(f"{path}: missing (is this a Duet bundle directory?)") from e
    except (OSError, ValueError) as e:
        raise CatalogError(f"{path}: unreadable: {e}") from e


def load_catalog(bundle: Path) -> Catalog:
    """Read the id columns, popularity.json and manifest.json of a bundle."""
    manifest = _read_json(bundle / "manifest.json")
    popular = [str(p["item_id"]) for p in _read_json(bundle / "popularity.json")]
    try:
        users = read_strings(bundle, "user_ids")
        all_ids = read_strings(bundle, "item_ids")
        years = np.load(bundle / "item_years.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        raise CatalogError(f"{bundle}: unreadable catalog columns: {e}") from e
    if not users or not all_ids:
        raise CatalogError(f"{bundle}: the bundle has no users or no items")
    known = set(all_ids)
    ordered = [i for i in dict.fromkeys(popular) if i in known]
    seen = set(ordered)
    ordered += [i for i in all_ids if i not in seen]
    dated = years[years > 0]
    return Catalog(
        user_ids=tuple(users),
        item_ids=tuple(ordered),
        genres=tuple(manifest["catalog"]["genre_vocab"]),
        year_min=int(dated.min()) if len(dated) else 1950,
        year_max=int(dated.max()) if len(dated) else 2020,
        embedding_dim=int(manifest["embedding_dim"]),
    )


def sample_catalog(
    host: str, admin_token: str, *, users: int, items: int, timeout: float = 10.0
) -> Catalog:
    """A catalog sampled by the service itself (`GET /admin/sample-ids`): no bundle copy needed,
    so a load test can target a remote deployment. Items arrive most popular first."""
    if not host.startswith(("http://", "https://")):
        raise CatalogError(f"--host must be an http(s) URL, got {host}")
    url = f"{host.rstrip('/')}/admin/sample-ids?users={users}&items={items}"
    headers = {"Authorization": f"Bearer {admin_token}"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise CatalogError(f"GET {url} answered {e.code}: {e.read()[:200]!r}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CatalogError(f"GET {url}: {e}") from e
    if not body.get("user_ids") or not body.get("item_ids"):
        raise CatalogError(f"GET {url}: the service sampled no users or no items")
    return Catalog(
        user_ids=tuple(str(u) for u in body["user_ids"]),
        item_ids=tuple(str(i) for i in body["item_ids"]),
        genres=tuple(body["genres"]),
        year_min=int(body["year_min"]),
        year_max=int(body["year_max"]),
        embedding_dim=int(body["embedding_dim"]),
    )


class ZipfSampler:
    """Draws ranks 0..n-1 with P(rank r) proportional to 1 / (r + 1) ** s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        if n < 1 or s <= 0:
            raise ValueError(f"ZipfSampler needs n >= 1 and s > 0, got n={n}, s={s}")
        self._cumulative = list(itertools.accumulate((r + 1) ** -s for r in range(n)))
        self._rng = rng

    def __call__(self) -> int:
        x = self._rng.random() * self._cumulative[-1]
        return min(bisect.bisect_right(self._cumulative, x), len(self._cumulative) - 1)


@dataclass(frozen=True)
class Shown:
    """A recommendation the simulated user saw: clicks refer back to it."""

    request_id: str
    item_ids: tuple[str, ...]


class Traffic:
    """Seeded generator of request bodies; one instance is shared by every simulated client."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        zipf_s: float = 1.1,
        new_user_share: float = 0.1,
        seed: int | None = None,
        remembered: int = 10_000,
    ) -> None:
        if not 0.0 <= new_user_share <= 1.0:
            raise ValueError(f"new_user_share must be in [0, 1], got {new_user_share}")
        self.catalog = catalog
        self.new_user_share = new_user_share
        self._rng = random.Random(seed)
        # Heavy users are not simply the lowest ids: shuffle once, then rank.
        self._users = list(catalog.user_ids)
        self._rng.shuffle(self._users)
        self._user_rank = ZipfSampler(len(self._users), zipf_s, self._rng)
        self._item_rank = ZipfSampler(len(catalog.item_ids), zipf_s, self._rng)
        self._new_ids = itertools.count()
        self._run = f"{self._rng.getrandbits(32):08x}"
        self._shown: OrderedDict[str, Shown] = OrderedDict()
        self._remembered = remembered

    def user(self) -> tuple[str, bool]:
        """A user id and whether the service has never seen it."""
        if self._rng.random() < self.new_user_share:
            return f"new-{self._run}-{next(self._new_ids)}", True
        return self._users[self._user_rank()], False

    def pause_s(self, mean_ms: float) -> float:
        """Think time: exponential, so that arrivals are not in lockstep."""
        return self._rng.expovariate(1000.0 / mean_ms) if mean_ms > 0 else 0.0

    def item(self) -> str:
        return self.catalog.item_ids[self._item_rank()]

    def items(self, n: int) -> list[str]:
        return list(dict.fromkeys(self.item() for _ in range(n)))

    def filters(self) -> JsonBody:
        rng, cat = self._rng, self.catalog
        kind = rng.randrange(3)
        if kind == 0 and cat.genres:
            return {"genres_any": rng.sample(cat.genres, k=min(2, len(cat.genres)))}
        if kind == 1 and cat.genres:
            return {"genres_none": [rng.choice(cat.genres)]}
        lo = rng.randint(cat.year_min, cat.year_max)
        return {"year_min": lo, "year_max": min(cat.year_max, lo + rng.randint(5, 30))}

    def recommend_body(self) -> JsonBody:
        """70% of the traffic: k mostly 10, some filters and exclusions, session histories."""
        rng = self._rng
        user_id, new = self.user()
        body: JsonBody = {"user_id": user_id, "k": rng.choices((10, 20, 50), (0.7, 0.2, 0.1))[0]}
        if rng.random() < 0.2:
            body["filters"] = self.filters()
        if rng.random() < 0.1:
            body["exclude_item_ids"] = self.items(3)
        if new and rng.random() < 0.6:
            history = self.items(rng.randint(3, 10))
            if rng.random() < 0.05:
                history.append(f"unknown-{rng.randrange(10**6)}")
            body["history"] = history
        return body

    def remember(self, user_id: str, shown: Shown) -> None:
        """Keep the latest recommendation per user (bounded) so clicks can follow it."""
        self._shown[user_id] = shown
        self._shown.move_to_end(user_id)
        while len(self._shown) > self._remembered:
            self._shown.popitem(last=False)

    def event_body(self) -> JsonBody:
        """20% of the traffic: mostly reactions to what was shown, with its request_id."""
        rng = self._rng
        kind = rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
        if self._shown and rng.random() < 0.7:
            user_id = rng.choice(list(itertools.islice(reversed(self._shown), 100)))
            shown = self._shown[user_id]
            if shown.item_ids:
                event: JsonBody = {
                    "user_id": user_id,
                    "item_id": rng.choice(shown.item_ids[:10]),
                    "type": kind,
                    "request_id": shown.request_id,
                }
                return _rated(event, rng)
        user_id, _ = self.user()
        return _rated({"user_id": user_id, "item_id": self.item(), "type": kind}, rng)

    def similar_path(self) -> str:
        return f"/v1/items/{self.item()}/similar?k={self._rng.choice((10, 20))}"

    def retrieve_body(self) -> JsonBody:
        rng = self._rng
        body: JsonBody
        kind = rng.random()
        if kind < 0.4:
            body = {"item_id": self.item()}
        elif kind < 0.8:
            body = {"history": self.items(rng.randint(2, 8))}
        else:
            vec = [rng.gauss(0.0, 1.0) for _ in range(self.catalog.embedding_dim)]
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            body = {"embedding": [v / norm for v in vec]}
        body["k"] = rng.choice((10, 20, 50))
        if rng.random() < 0.2:
            body["filters"] = self.filters()
        return body


def _rounded_ms(ms: float) -> int:
    """Two significant digits, as Locust buckets its response times."""
    if ms < 100:
        return round(ms)
    digits = int(10 ** (len(str(round(ms))) - 2))
    return round(ms / digits) * digits


@dataclass
class ArmStats:
    """Requests, failures and latency per (arm, route): the A/B view Locust does not have."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency_ms: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)

    def record(self, arm: str, route: str, ms: float, *, ok: bool) -> None:
        key = (arm, route)
        self.requests[key] += 1
        if not ok:
            self.failures[key] += 1
        self.latency_ms.setdefault(key, Counter())[_rounded_ms(ms)] += 1

    def percentile(self, arm: str, route: str, q: float) -> float:
        hist = self.latency_ms.get((arm, route))
        if not hist:
            return 0.0
        rank = q * sum(hist.values())
        seen = 0
        for ms in sorted(hist):
            seen += hist[ms]
            if seen >= rank:
                return float(ms)
        return float(max(hist))

    def rows(self) -> list[JsonBody]:
        return [
            {
                "arm": arm,
                "route": route,
                "requests": n,
                "failures": self.failures[(arm, route)],
                "p50_ms": self.percentile(arm, route, 0.50),
                "p99_ms": self.percentile(arm, route, 0.99),
            }
            for (arm, route), n in sorted(self.requests.items())
        ]


def threshold_violations(
    *,
    num_requests: int,
    fail_ratio: float,
    p99_ms: float,
    max_fail_ratio: float,
    max_p99_ms: float,
) -> list[str]:
    """Why a run failed its thresholds, one reason per line; empty when it passed."""
    reasons = []
    if num_requests == 0:
        reasons.append("no request completed: is the service reachable?")
    if fail_ratio > max_fail_ratio:
        reasons.append(f"failure ratio {fail_ratio:.4f} > allowed {max_fail_ratio:.4f}")
    if p99_ms > max_p99_ms:
        reasons.append(f"p99 {p99_ms:.0f} ms > allowed {max_p99_ms:.0f} ms")
    return reasons
